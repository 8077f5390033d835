"""The host side of the serial link: JSON lines over any pyserial URL.

A reader thread splits the byte stream into lines, stamps each with the host
clock when its bytes arrived, and logs every JSON object with an "ev" key as
an event. Anything else (a boot banner, a traceback, line noise) is kept as
text in ``noise`` and never breaks the reader.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import serial

from host_harness.core.events import Event, EventLog
from host_harness.link.credit import CreditWindow

MAX_LINE = 4096

LineListener = Callable[[int, str, dict[str, Any] | None], None]


def split_event(text: str) -> tuple[str, dict[str, Any] | None]:
    """One console line: (noise before the event, the event) or (the line, None)."""
    start = text.find('{"ev"')
    if start >= 0:
        try:
            data = json.loads(text[start:])
        except ValueError:
            data = None
        if isinstance(data, dict):
            return text[:start], data
    return text, None


class SerialLink:
    def __init__(self, url: str, baudrate: int = 115200, name: str = "serial") -> None:
        try:
            self.port = serial.serial_for_url(url, baudrate=baudrate, timeout=0.2, exclusive=None)
        except (serial.SerialException, ValueError, OSError) as e:
            raise ConnectionError(f"cannot open serial port {url}: {e}") from e
        self._init_state(url, name)
        self._thread = threading.Thread(target=self._reader, name=f"serial-reader {url}", daemon=True)
        self._thread.start()

    def _init_state(self, url: str, name: str) -> None:
        """The link's state, whoever reads its bytes (its own thread, or a ConsoleMux)."""
        self.url = url
        self.log = EventLog(f"{name} {url}")
        self.noise: deque[str] = deque(maxlen=200)
        self.raw_listeners: list[Any] = []  # called with every chunk of bytes read
        self.bytes_read = 0  # nothing at all from a port says more than a timeout
        self.line_listeners: list[LineListener] = []  # called per line, in order: (arrival ns, noise, event)
        self._write_lock = threading.Lock()
        self.credit = CreditWindow()  # paces writes to the device's console window (see link/credit.py)
        self._stop = threading.Event()

    def _reader(self) -> None:
        buf = bytearray()
        while not self._stop.is_set():
            try:
                chunk = self.port.read(self.port.in_waiting or 1)
            except (serial.SerialException, OSError, TypeError, AttributeError) as e:
                if not self._stop.is_set():
                    self.log.close(f"serial port {self.url} closed: {e}")
                return
            if not chunk:
                continue
            self._feed(buf, chunk, time.monotonic_ns())

    def _feed(self, buf: bytearray, chunk: bytes, now: int) -> None:
        """Bytes read at ``now``: added to ``buf``, every whole line in it handled."""
        self.bytes_read += len(chunk)
        for cb in self.raw_listeners:
            cb(chunk)
        buf += chunk
        while True:
            i = buf.find(b"\n")
            if i < 0:
                if len(buf) > MAX_LINE:
                    self._line(bytes(buf[:MAX_LINE]), now)  # too long for an event: noise
                    del buf[:MAX_LINE]
                break
            line = bytes(buf[:i]).strip(b"\r")
            del buf[: i + 1]
            self._line(line, now)

    def _line(self, line: bytes, now: int) -> None:
        noise, data = split_event(line.decode("utf-8", "replace"))
        if noise:
            self.noise.append(noise)
        if data is not None:
            self.credit.on_event(data)
            self.log.add(Event(data=data, host_ns=now, via="serial"))
        for cb in self.line_listeners:
            cb(now, noise, data)

    def write_raw(self, data: bytes) -> int:
        """Write bytes, never more unanswered than the device's console window;
        returns time.monotonic_ns() just before the first byte went out."""
        with self._write_lock:
            return self.credit.send(data, self._write)

    def _write(self, data: bytes) -> None:
        try:
            self.port.write(data)
            self.port.flush()
        except (serial.SerialException, OSError) as e:
            raise ConnectionError(f"cannot write to serial port {self.url}: {e}") from e

    def send(self, obj: dict[str, Any]) -> int:
        """Send one command line; returns the host time of sending (ns)."""
        return self.write_raw(json.dumps(obj, separators=(",", ":")).encode() + b"\n")

    def noise_tail(self, n: int = 10) -> str:
        return "\n".join(list(self.noise)[-n:])

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(Exception):
            self.port.close()
        self._thread.join(timeout=2)
        self.log.close("serial link closed")
