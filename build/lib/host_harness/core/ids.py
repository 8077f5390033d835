"""Unique command ids: a random run prefix and a counter."""

from __future__ import annotations

import itertools
import secrets
import threading


class IdMaker:
    def __init__(self, prefix: str = "h") -> None:
        self.prefix = f"{prefix}{secrets.token_hex(3)}"
        self._n = itertools.count(1)
        self._lock = threading.Lock()

    def __call__(self) -> str:
        with self._lock:
            return f"{self.prefix}-{next(self._n)}"
