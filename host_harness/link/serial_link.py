"""The host side of the serial link: JSON lines over any pyserial URL.

A reader thread splits the byte stream into lines, stamps each with the host
clock when its bytes arrived, and logs every JSON object with an "ev" key as
an event. Anything else (a boot banner, a traceback, line noise) is kept as
text in ``noise`` and never breaks the reader.

A port that disappears (a board with native USB re-enumerates after a reset)
is waited for: the link closes it, says so, reopens the same path when it
exists again (within ``reopen_timeout``) and goes on reading. A labgrid
place's port is waited for the same way, but found anew on the coordinator:
a restarted exporter serves the place on another port. A write that fails
meanwhile waits for the port to come back and is made again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import serial

from host_harness.core.events import Event, EventLog
from host_harness.dut.labgrid_place import LabgridError, is_place, resolve
from host_harness.link.credit import CreditWindow
from host_harness.link.quickack import quick_acks

MAX_LINE = 4096
REOPEN_TIMEOUT = 10.0  # seconds a vanished port is waited for

log = logging.getLogger(__name__)

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


def _open(url: str, baudrate: int) -> serial.SerialBase:
    try:
        port = serial.serial_for_url(url, baudrate=baudrate, timeout=0.2, exclusive=None)
    except (serial.SerialException, ValueError, OSError) as e:
        raise ConnectionError(f"cannot open serial port {url}: {e}") from e
    quick_acks(port)  # RFC 2217: no 40 ms delayed ACKs against a ser2net without nodelay
    return port


class SerialLink:
    def __init__(
        self, url: str, baudrate: int = 115200, name: str = "serial", reopen_timeout: float = REOPEN_TIMEOUT
    ) -> None:
        self.baudrate = baudrate
        self.spec = url  # as given: labgrid:PLACE is resolved again when its port goes
        url = resolve(url)  # labgrid:PLACE -> the place's RFC 2217 URL, found anew at each open
        self.port = _open(url, baudrate)
        self._init_state(url, name)
        # A port path (not a URL) or a labgrid place that vanishes is waited for and reopened;
        # 0 turns that off. Another URL (a ser2net of the user's own) is not.
        self.reopen_timeout = reopen_timeout if "://" not in url or is_place(self.spec) else 0.0
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
        self.sent_listeners: list[Callable[[int, bytes], None]] = []  # called per write: (host ns, bytes)
        self.reopen_timeout = 0.0  # a vanished port is not waited for (SerialLink sets its own)
        self.reopens = 0
        self._port_cv = threading.Condition()  # guards the swap of a reopened port, wakes waiting writers
        self._gone = False  # set while the port is away, until it is reopened or given up
        self._write_lock = threading.Lock()
        self.credit = CreditWindow()  # paces writes to the device's console window (see link/credit.py)
        self._stop = threading.Event()

    def _notice(self, text: str) -> None:
        """Something the link itself says: logged, and kept in order with the console lines."""
        log.warning("%s", text)
        self._line(f"[lightctl] {text}".encode(), time.monotonic_ns())

    def _where(self) -> tuple[str | None, Exception | None]:
        """Where the vanished port is now: (its URL, None), or (None, why not yet)."""
        if is_place(self.spec):
            try:
                return resolve(self.spec, timeout=0), None  # one look at the coordinator
            except LabgridError as e:  # the exporter is away, or its ser2net not started yet
                return None, e
        return (self.url, None) if os.path.exists(self.url) else (None, None)

    def _reopen(self, why: Exception) -> bool:
        """The port vanished: wait for it to come back (its path, or its place's port) and reopen it."""
        with self._port_cv:
            self._gone = True
        with contextlib.suppress(Exception):
            self.port.close()
        what = self.spec if is_place(self.spec) else "it"
        self._notice(
            f"port {self.url} disappeared ({why}); waiting up to {self.reopen_timeout:g} s for {what} to come back"
        )
        deadline = time.monotonic() + self.reopen_timeout
        last: Exception = why
        while not self._stop.is_set() and time.monotonic() < deadline:
            url, not_yet = self._where()
            last = not_yet or last
            if url is not None:
                try:
                    port = _open(url, self.baudrate)
                except ConnectionError as e:  # the node is there, its driver not yet ready
                    last = e
                else:
                    self._notice(f"reopened {url}" if url == self.url else f"reopened {self.spec} on {url}")
                    with self._port_cv:
                        self.port = port
                        self.url = url
                        self.reopens += 1
                        self._gone = False
                        self._port_cv.notify_all()
                    # The lines in flight went with the old port. Only now: a writer waiting for
                    # the port holds the credit's lock (it writes under it).
                    self.credit.reset()
                    return True
            self._stop.wait(0.05)
        if not self._stop.is_set():
            self.log.close(
                f"serial port {self.url} disappeared and did not come back within {self.reopen_timeout:g} s: {last}"
            )
        with self._port_cv:
            self._port_cv.notify_all()  # writers waiting for the port give up
        return False

    def _reader(self) -> None:
        buf = bytearray()
        while not self._stop.is_set():
            try:
                chunk = self.port.read(self.port.in_waiting or 1)
            except (serial.SerialException, OSError, TypeError, AttributeError) as e:
                if self._stop.is_set():
                    return
                if self.reopen_timeout > 0 and isinstance(e, (serial.SerialException, OSError)):
                    buf.clear()  # a line cut by the disconnect is gone
                    if self._reopen(e):
                        continue
                    return
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
            t = self.credit.send(data, self._write)
        for cb in self.sent_listeners:
            cb(t, data)
        return t

    def _write(self, data: bytes) -> None:
        for again in (False, True):
            seen = self._wait_port()
            try:
                self.port.write(data)
                self.port.flush()
                return
            except (serial.SerialException, OSError) as e:
                # The port went away under the write: once the reader reopens it, write again.
                if again or self.reopen_timeout <= 0 or not self._reopened_since(seen):
                    raise ConnectionError(f"cannot write to serial port {self.url}: {e}") from e

    def _alive(self) -> bool:
        return not self._stop.is_set() and self.log.closed_reason is None

    def _wait_port(self) -> int:
        """Wait while the port is away (being reopened); returns the reopen count seen."""
        with self._port_cv:
            if self._gone:
                self._port_cv.wait_for(lambda: not self._gone or not self._alive(), self.reopen_timeout + 1)
            return self.reopens

    def _reopened_since(self, seen: int) -> bool:
        """After a failed write: has the reader reopened the port (waiting for it, if it is on it)?"""
        with self._port_cv:
            return (
                self._port_cv.wait_for(lambda: self.reopens > seen or not self._alive(), self.reopen_timeout + 1)
                and self.reopens > seen
            )

    def send(self, obj: dict[str, Any]) -> int:
        """Send one command line; returns the host time of sending (ns)."""
        return self.write_raw(json.dumps(obj, separators=(",", ":")).encode() + b"\n")

    def noise_tail(self, n: int = 10) -> str:
        return "\n".join(list(self.noise)[-n:])

    def close(self) -> None:
        self._stop.set()
        with self._port_cv:
            self._port_cv.notify_all()
        with contextlib.suppress(Exception):
            self.port.close()
        self._thread.join(timeout=2)
        self.log.close("serial link closed")
