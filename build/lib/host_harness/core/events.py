"""A thread-safe log of events received from a device, with timed waits."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


class WaitTimeout(TimeoutError):
    """A wait ran out of time; the message names what was waited for."""


@dataclass
class Event:
    """One message from the device, stamped on the host clock when it arrived."""

    data: dict[str, Any]
    host_ns: int  # time.monotonic_ns() when its bytes were read
    via: str  # "serial" or "mqtt"
    topic: str = ""
    index: int = field(default=0)

    @property
    def kind(self) -> str:
        return str(self.data.get("ev", ""))

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)


Predicate = Callable[[Event], bool]


class EventLog:
    """Events in arrival order. ``wait_for`` blocks until one matches."""

    def __init__(self, name: str, keep: int = 20000) -> None:
        self.name = name
        self._events: deque[Event] = deque(maxlen=keep)
        self._count = 0
        self._cond = threading.Condition()
        self.closed_reason: str | None = None

    def add(self, ev: Event) -> None:
        with self._cond:
            self._count += 1
            ev.index = self._count
            self._events.append(ev)
            self._cond.notify_all()

    def keep_last(self, keep: int) -> None:
        """From now on hold only the newest ``keep`` events (indices and cursors carry on)."""
        with self._cond:
            self._events = deque(self._events, maxlen=keep)

    def close(self, reason: str) -> None:
        with self._cond:
            self.closed_reason = reason
            self._cond.notify_all()

    @property
    def cursor(self) -> int:
        """Index of the newest event: pass as ``since`` to wait for later ones."""
        with self._cond:
            return self._count

    def events(self, since: int = 0) -> list[Event]:
        with self._cond:
            return [e for e in self._events if e.index > since]

    def wait_for(self, pred: Predicate, timeout: float, what: str, since: int = 0) -> Event:
        """The first event after ``since`` that matches, or WaitTimeout naming ``what``."""
        deadline = time.monotonic() + timeout
        seen = since
        with self._cond:
            while True:
                for e in self._events:
                    if e.index > seen:
                        seen = e.index
                        if pred(e):
                            return e
                if self.closed_reason is not None:
                    raise WaitTimeout(f"{self.name}: gave up waiting for {what}: {self.closed_reason}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise WaitTimeout(f"{self.name}: timed out after {timeout:g} s waiting for {what}")
                self._cond.wait(left)
