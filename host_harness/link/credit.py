"""Credits for a console without flow control.

An ESP32's UART console buffers 260 bytes (plus a 128-byte FIFO) and drops
what overflows; a host writing kilobytes at once loses commands. The device
announces its window (``rx_window`` in its ``boot`` and ``info`` events) and
answers every non-blank line it reads with exactly one reply line, written
before it reads the next. A reply therefore means its line has left the
device's buffer: it is the credit that lets the next bytes go. The sender
never has more than ``window`` bytes unanswered (a single longer line goes
alone, into an empty buffer that the device drains as the bytes arrive).

A longer line can still overflow the buffer when the device stops reading
for a while (a busy loop, a task that did not yield, a process descheduled
on a loaded host), and if its line end is lost the device waits for the
rest of the line while the host waits for its answer. So while such a line
is unanswered the sender writes a lone line end every ``NUDGE_S``: the
device ignores a blank line, and completes (and answers) a line whose end
was lost. Nothing else is in flight then, so nothing else is merged.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from host_harness.core.events import WaitTimeout
from host_harness.link.replies import ONLY_REPLIES

NUDGE_S = 0.25  # a lone line end while a line longer than the window is unanswered
CTRL_C = 3


def is_reply(data: dict[str, Any]) -> bool:
    """Whether a console event answers a line the host sent. Lines of the
    device's own (status, changes from MQTT or the button, errors with a
    ``src``) are not replies."""
    kind = data.get("ev")
    if kind in ONLY_REPLIES:
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
        # each line sent and not yet answered: its bytes, and its start (for the error)
        self._lines: deque[tuple[int, bytes]] = deque()
        self._partial = 0  # bytes of a line not yet ended
        self.nudges = 0  # lone line ends written (see NUDGE_S)
        self._cond = threading.Condition()

    @property
    def in_flight(self) -> int:
        return sum(n for n, _ in self._lines) + self._partial

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

    def _nudge_due(self, window: int) -> bool:
        """Whether the oldest unanswered line may have lost its end: longer
        than the window, and no line of the host's own is half written."""
        return bool(self._lines) and self._lines[0][0] > window and not self._partial

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
                        oldest = f"{self._lines[0][0]} B, {self._lines[0][1]!r}" if self._lines else "a partial line"
                        self._lines.clear()
                        self._partial = 0
                        raise WaitTimeout(
                            f"no reply freed the device's {window}-byte console window within "
                            f"{self.timeout:g} s ({n} lines unanswered, the oldest {oldest})"
                        )
                    if not self._cond.wait(min(left, NUDGE_S)) and self._nudge_due(window):
                        write(b"\n")
                        self.nudges += 1
                t = time.monotonic_ns()
                write(piece)
                t_first = t_first or t
                if piece[-1] in (10, 13):
                    if len(piece) > 1 or self._partial:
                        self._lines.append((self._partial + len(piece), piece[:48]))
                    self._partial = 0
                else:
                    self._partial += len(piece)
        return t_first or time.monotonic_ns()
