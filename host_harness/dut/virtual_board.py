"""A Unix-port interpreter on a pty standing in for a freshly flashed board (see image.deploy).

Standalone, a board a user or CI points the harness at, until killed::

    python -m host_harness.dut.virtual_board --link /tmp/lab/ttyV0 [--dir FS] [--heapsize 64k]

prints ``port <path>`` once the board sits at its REPL; deploy to that path
with ``lightctl deploy``, then run the suite or the job against it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pty
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import tty
from pathlib import Path

from host_harness.dut.unix_device import find_micropython, spawn_on_pty


# -- a Unix-port "board" -----------------------------------------------------
class VirtualBoard:
    """A freshly flashed board, made of a Unix-port interpreter on a pty.

    ``micropython -i`` runs in an empty working directory (the board's
    filesystem) at its REPL. mpremote works against it with ``resume``. When
    the process ends (``machine.soft_reset()`` ends a Unix-port process) it is
    started again, running ``main.py`` if the directory holds one: a reset.
    The pty stays the same across resets, as /dev/ttyUSB0 does.

    ``link``: the board's port is this symlink to the pty, as udev names a
    board by id. ``unplug()`` and ``replug()`` make the port disappear and
    come back under the same name on a new pty, as a board with native USB
    (USB-JTAG) re-enumerates after a reset.
    """

    def __init__(
        self,
        workdir: Path | None = None,
        micropython: str | None = None,
        heapsize: str | None = None,
        link: Path | None = None,
    ):
        self.micropython = find_micropython(micropython)
        self.heapsize = heapsize
        self.own_dir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="lightctl-board-"))
        self.link = Path(link) if link is not None else None
        self.port = ""
        self.pty = ""
        self.boots = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._master: int | None = None
        self._slave: int | None = None
        self._stop = threading.Event()
        self._unplugged = False
        self._lock = threading.Lock()
        self._booted = threading.Condition()
        self._thread: threading.Thread | None = None

    def start(self) -> str:
        if self.link is not None and (self.link.exists() or self.link.is_symlink()):
            if not self.link.is_symlink():
                raise FileExistsError(f"{self.link} exists and is not a symlink: not replacing it with a board's port")
            self.link.unlink()
        self._plug()
        return self.port

    def _plug(self) -> None:
        self._master, self._slave = pty.openpty()
        tty.setraw(self._slave)
        self.pty = os.ttyname(self._slave)
        if self.link is not None:
            tmp = self.link.with_name(self.link.name + ".new")
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(self.pty)
            tmp.replace(self.link)  # the name appears at once, pointing at a working pty
        self.port = str(self.link) if self.link is not None else self.pty
        # The supervisor thread starts the interpreter too: a child dies with the thread
        # that spawned it (children.spawn), so every process comes from the thread that
        # outlives it, whichever thread plugged the board in.
        started = threading.Event()
        failed: list[BaseException] = []
        self._thread = threading.Thread(
            target=self._supervise, args=(started, failed), name=f"virtual board {self.port}", daemon=True
        )
        self._thread.start()
        started.wait()
        if failed:
            raise failed[0]

    def _spawn(self) -> None:
        main = ["main.py"] if (self.workdir / "main.py").exists() else []
        env = {k: v for k, v in os.environ.items() if k != "LIGHTCTL_CONFIG"}
        self.proc = spawn_on_pty(self._master, self.micropython, self.heapsize, main, self.workdir, env)
        with self._booted:
            self.boots += 1
            self._booted.notify_all()

    def _supervise(self, started: threading.Event, failed: list[BaseException]) -> None:
        try:
            with self._lock:
                self._unplugged = False
                self._spawn()
        except BaseException as e:
            failed.append(e)
            return
        finally:
            started.set()
        while True:
            proc = self.proc
            if proc is None:
                return
            proc.wait()
            with self._lock:
                if self._stop.is_set() or self._unplugged:
                    return
                self._spawn()

    def wait_boots(self, n: int, timeout: float = 10.0) -> None:
        """Wait until the board has started ``n`` times in all."""
        with self._booted:
            if not self._booted.wait_for(lambda: self.boots >= n, timeout):
                raise TimeoutError(
                    f"virtual board {self.port} booted {self.boots} times, not {n}, within {timeout:g} s"
                )

    def _unplug(self) -> None:
        with self._lock:  # no restart after this
            self._unplugged = True
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
        if self.link is not None:
            self.link.unlink(missing_ok=True)

    def unplug(self) -> None:
        """The port disappears: the interpreter stops, the pty hangs up, the link goes."""
        if self.link is None:
            raise RuntimeError("unplug needs a board made with link=PATH: a bare pty cannot come back by name")
        self._unplug()

    def replug(self) -> str:
        """The port comes back under the same name (a new pty), and the board boots."""
        self._plug()
        return self.port

    def stop(self) -> None:
        self._stop.set()
        self._unplug()

    def cleanup(self) -> None:
        self.stop()
        if self.own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)


# -- standalone ----------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m host_harness.dut.virtual_board",
        description="A Unix-port MicroPython on a pty, standing in for a freshly flashed board, until killed.",
    )
    p.add_argument("--link", type=Path, default=None, help="the port's name: a symlink to the pty (default: the pty)")
    p.add_argument("--dir", type=Path, default=None, help="the board's filesystem (default: a temporary folder)")
    p.add_argument("--micropython", default=None, help="a MicroPython Unix-port executable")
    p.add_argument("--heapsize", default=None, help="heap size (default: the interpreter's)")
    a = p.parse_args(argv)
    if a.dir is not None and not a.dir.is_dir():
        print(f"error: --dir {a.dir}: no such folder", file=sys.stderr)
        return 2
    if a.link is not None and not a.link.parent.is_dir():
        print(f"error: --link {a.link}: folder {a.link.parent} does not exist", file=sys.stderr)
        return 2
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    try:
        board = VirtualBoard(a.dir, a.micropython, a.heapsize, a.link)
        port = board.start()
    except (OSError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        print(f"port {port}", flush=True)
        while not done.wait(1.0):
            pass
    finally:
        board.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
