"""A Unix-port interpreter on a pty standing in for a freshly flashed board (see image.deploy)."""

from __future__ import annotations

import contextlib
import os
import pty
import shutil
import subprocess
import tempfile
import threading
import tty
from pathlib import Path

from host_harness import children
from host_harness.dut.unix_device import find_micropython


# -- a Unix-port "board" -----------------------------------------------------
class VirtualBoard:
    """A freshly flashed board, made of a Unix-port interpreter on a pty.

    ``micropython -i`` runs in an empty working directory (the board's
    filesystem) at its REPL. mpremote works against it with ``resume``. When
    the process ends (``machine.soft_reset()`` ends a Unix-port process) it is
    started again, running ``main.py`` if the directory holds one: a reset.
    The pty stays the same across resets, as /dev/ttyUSB0 does.
    """

    def __init__(self, workdir: Path | None = None, micropython: str | None = None, heapsize: str | None = None):
        self.micropython = find_micropython(micropython)
        self.heapsize = heapsize
        self.own_dir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="lightctl-board-"))
        self.port = ""
        self.boots = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._master: int | None = None
        self._slave: int | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._booted = threading.Condition()
        self._thread: threading.Thread | None = None

    def start(self) -> str:
        self._master, self._slave = pty.openpty()
        tty.setraw(self._slave)
        self.port = os.ttyname(self._slave)
        self._spawn()
        self._thread = threading.Thread(target=self._supervise, name=f"virtual board {self.port}", daemon=True)
        self._thread.start()
        return self.port

    def _spawn(self) -> None:
        cmd = [self.micropython]
        if self.heapsize:
            cmd += ["-X", f"heapsize={self.heapsize}"]
        cmd += ["-i"]
        if (self.workdir / "main.py").exists():
            cmd.append("main.py")
        env = {k: v for k, v in os.environ.items() if k != "LIGHTCTL_CONFIG"}
        self.proc = children.spawn(
            cmd,
            stdin=self._master,
            stdout=self._master,
            stderr=self._master,
            cwd=self.workdir,
            env=env,
            start_new_session=True,
        )
        with self._booted:
            self.boots += 1
            self._booted.notify_all()

    def _supervise(self) -> None:
        while True:
            proc = self.proc
            if proc is None:
                return
            proc.wait()
            with self._lock:
                if self._stop.is_set():
                    return
                self._spawn()

    def wait_boots(self, n: int, timeout: float = 10.0) -> None:
        """Wait until the board has started ``n`` times in all."""
        with self._booted:
            if not self._booted.wait_for(lambda: self.boots >= n, timeout):
                raise TimeoutError(
                    f"virtual board {self.port} booted {self.boots} times, not {n}, within {timeout:g} s"
                )

    def stop(self) -> None:
        with self._lock:  # no restart after this
            self._stop.set()
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        if self._thread:
            self._thread.join(timeout=10)
        for fd in (self._master, self._slave):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = None

    def cleanup(self) -> None:
        self.stop()
        if self.own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)
