"""Credits for a console without flow control.

An ESP32's UART console buffers 260 bytes (plus a 128-byte FIFO) and drops
what overflows; a host writing kilobytes at once loses commands. The device
announces its window (``rx_window`` in its ``boot`` and ``info`` events) and
answers every non-blank line it reads with exactly one reply line, written
before it reads the next. A reply therefore means its line has left the
device's buffer: it is the credit that lets the next bytes go. The sender
never has more than ``window`` bytes unanswered (a single longer line goes
alone, into an empty buffer that the device drains as the bytes arrive).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from host_harness.core.events import WaitTimeout

REPLY_KINDS = frozenset({"pong", "state", "ack", "info"})
CTRL_C = 3


def is_reply(data: dict[str, Any]) -> bool:
    """Whether a console event answers a line the host sent. Lines of the
    device's own (status, changes from MQTT or the button, errors with a
    ``src``) are not replies."""
    kind = data.get("ev")
    if kind in REPLY_KINDS:
        return True
    if kind == "error":
        return "src" not in data
    if kind == "change":
        return data.get("src") == "serial" or bool(data.get("dup"))
    return False


def split_lines(data: bytes) -> list[bytes]:
    """``data`` cut after every line end (CR or LF, as the device reads them)."""
    out: list[bytes] = []
    start = 0
    for i, c in enumerate(data):
        if c in (10, 13):
            out.append(data[start : i + 1])
            start = i + 1
    if start < len(data):
        out.append(data[start:])
    return out


class CreditWindow:
    def __init__(self, timeout: float = 10.0) -> None:
        self.window: int | None = None  # None: the device announced none; no pacing
        self.enabled = True
        self.timeout = timeout
        self.repl = False  # after Ctrl-C the REPL answers no lines: no pacing until the next boot
        self._lines: deque[int] = deque()  # bytes of each line sent and not yet answered
        self._partial = 0  # bytes of a line not yet ended
        self._cond = threading.Condition()

    @property
    def in_flight(self) -> int:
        return sum(self._lines) + self._partial

    def reset(self) -> None:
        with self._cond:
            self._lines.clear()
            self._partial = 0
            self._cond.notify_all()

    def on_event(self, data: dict[str, Any]) -> None:
        """Called by the reader for every console event, in order."""
        w = data.get("rx_window")
        if data.get("ev") == "boot":
            self.repl = False
            self.reset()
        if isinstance(w, int) and w > 0 and data.get("ev") in ("boot", "info"):
            self.window = w
        if is_reply(data):
            with self._cond:
                if self._lines:
                    self._lines.popleft()
                self._cond.notify_all()

    def send(self, data: bytes, write: Callable[[bytes], None]) -> int:
        """Write ``data`` line by line within the window; returns the host
        time (ns) just before its first byte went out."""
        if not self.enabled or self.window is None or self.repl or CTRL_C in data:
            if CTRL_C in data:
                self.repl = True
                self.reset()
            t = time.monotonic_ns()
            write(data)
            return t
        window = self.window
        t_first = 0
        for piece in split_lines(data):
            with self._cond:
                deadline = time.monotonic() + self.timeout
                while self.in_flight and self.in_flight + len(piece) > window:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        n = len(self._lines)
                        self._lines.clear()
                        self._partial = 0
                        raise WaitTimeout(
                            f"no reply freed the device's {window}-byte console window within "
                            f"{self.timeout:g} s ({n} lines unanswered)"
                        )
                    self._cond.wait(left)
                t = time.monotonic_ns()
                write(piece)
                t_first = t_first or t
                if piece[-1] in (10, 13):
                    if len(piece) > 1 or self._partial:
                        self._lines.append(self._partial + len(piece))
                    self._partial = 0
                else:
                    self._partial += len(piece)
        return t_first or time.monotonic_ns()
