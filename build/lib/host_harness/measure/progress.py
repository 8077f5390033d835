"""A dependency-free progress bar on stderr."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, total: int, label: str, stream: TextIO | None = None, width: int = 30) -> None:
        self.total = max(1, total)
        self.label = label
        self.stream = stream or sys.stderr
        self.width = width
        self.done = 0
        self.t0 = time.monotonic()
        self.tty = self.stream.isatty()
        self._last_pct = -1
        self.note = ""

    def update(self, n: int = 1, note: str = "") -> None:
        self.done += n
        self.note = note or self.note
        pct = int(100 * self.done / self.total)
        if self.tty:
            filled = int(self.width * self.done / self.total)
            bar = "#" * filled + "-" * (self.width - filled)
            rate = self.done / max(1e-9, time.monotonic() - self.t0)
            self.stream.write(f"\r{self.label} [{bar}] {self.done}/{self.total} {rate:6.0f}/s {self.note:<24}")
            self.stream.flush()
        elif pct // 25 != self._last_pct // 25 or self.done == self.total:
            self.stream.write(f"{self.label}: {self.done}/{self.total} ({pct}%) {self.note}\n")
            self.stream.flush()
        self._last_pct = pct

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
