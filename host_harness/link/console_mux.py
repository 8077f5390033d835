"""Many Unix-port consoles read by one thread.

A fleet of Unix-port devices has one pseudo-terminal each. Instead of a
pyserial reader thread per device (link.serial_link.SerialLink), one thread
waits on all of them with a selector and hands each chunk to its device's
``MuxLink``, which splits lines and logs events exactly as SerialLink does
(it is one, without the port object and the thread). Writes go straight to
the pty from the caller's thread.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import selectors
import threading
import time

from host_harness.link.serial_link import SerialLink

WRITE_TIMEOUT_S = 5.0


class MuxLink(SerialLink):
    """A SerialLink whose bytes are read by a ConsoleMux."""

    def __init__(self, mux: ConsoleMux, fd: int, url: str, name: str) -> None:
        # SerialLink's state, without its port object and reader thread.
        self._init_state(url, name)
        self.fd = fd
        self.buf = bytearray()
        self._mux = mux

    def _write(self, data: bytes) -> None:
        """All of ``data`` into the pty (SerialLink.write_raw paces it by the console window)."""
        view = memoryview(data)
        deadline = time.monotonic() + WRITE_TIMEOUT_S
        while view:
            try:
                view = view[os.write(self.fd, view) :]
            except BlockingIOError:
                left = deadline - time.monotonic()
                if left <= 0:
                    msg = f"cannot write to {self.url}: not drained in {WRITE_TIMEOUT_S:g} s"
                    raise ConnectionError(msg) from None
                select.select([], [self.fd], [], left)
            except OSError as e:
                raise ConnectionError(f"cannot write to serial port {self.url}: {e}") from e

    def close(self) -> None:
        if not self._stop.is_set():
            self._stop.set()
            self._mux.detach(self)
        self.log.close("serial link closed")


class ConsoleMux:
    """One reader thread for many pty consoles; it ends when its last link is closed."""

    def __init__(self) -> None:
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._lock = threading.Lock()
        self._ops: list[tuple[str, MuxLink]] = []
        self._links = 0
        self._thread = threading.Thread(target=self._run, name="console-mux", daemon=True)
        self._thread.start()

    def attach(self, port: str, name: str = "unix device") -> MuxLink:
        """Open the pty ``port`` and read it from now on."""
        try:
            fd = os.open(port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        except OSError as e:
            raise ConnectionError(f"cannot open serial port {port}: {e}") from e
        link = MuxLink(self, fd, port, name)
        self._op("add", link)
        return link

    def detach(self, link: MuxLink) -> None:
        self._op("remove", link)

    def close_if_unused(self) -> None:
        """End the thread now if no link was ever attached (else it ends with the last link)."""
        os.write(self._wake_w, b"x")

    def _op(self, op: str, link: MuxLink) -> None:
        with self._lock:
            self._ops.append((op, link))
            self._links += 1 if op == "add" else -1
        os.write(self._wake_w, b"x")

    def _apply_ops(self) -> bool:
        """Registrations made in this thread only; False once no link is left."""
        with self._lock:
            ops, self._ops = self._ops, []
            left = self._links
        for op, link in ops:
            if op == "add":
                self._sel.register(link.fd, selectors.EVENT_READ, link)
            else:
                with contextlib.suppress(KeyError, ValueError):
                    self._sel.unregister(link.fd)
                with contextlib.suppress(OSError):
                    os.close(link.fd)
        return left > 0

    def _run(self) -> None:
        try:
            while True:
                for key, _ in self._sel.select():
                    link = key.data
                    if link is None:
                        with contextlib.suppress(BlockingIOError):
                            os.read(self._wake_r, 4096)
                        continue
                    self._read(link)
                if not self._apply_ops():
                    return
        finally:
            self._sel.close()
            os.close(self._wake_r)
            os.close(self._wake_w)

    def _read(self, link: MuxLink) -> None:
        try:
            chunk = os.read(link.fd, 4096)
        except BlockingIOError:
            return
        except OSError as e:  # EIO: the process on the other side is gone
            chunk = b""
            reason = errno.errorcode.get(e.errno or 0, str(e))
        else:
            reason = "end of file"
        if not chunk:
            self._sel.unregister(link.fd)
            if not link._stop.is_set():
                link.log.close(f"serial port {link.url} closed: {reason}")
            return
        link._feed(link.buf, chunk, time.monotonic_ns())
