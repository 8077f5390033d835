"""Serial port checks before touching a board: does the port exist, who holds it, does a REPL answer."""

from __future__ import annotations

import contextlib
import os
import re
import stat
import time
from pathlib import Path

import serial

from host_harness.dut.labgrid_place import is_place, resolve


class DeployError(RuntimeError):
    """Deploying failed; the message says what to do about it."""


# -- serial port checks ------------------------------------------------------
def is_url(port: str) -> bool:
    return "://" in port or is_place(port)


def known_ports() -> list[str]:
    from serial.tools import list_ports

    return sorted(p.device for p in list_ports.comports())


def check_port_exists(port: str) -> None:
    """A clear error for a serial device path that does not exist."""
    if is_url(port) or os.path.exists(port):
        return
    found = known_ports()
    hint = f"serial ports found: {', '.join(found)}" if found else "no serial ports found: is the board plugged in?"
    raise DeployError(f"serial port {port} does not exist ({hint})")


def port_holders(port: str) -> list[tuple[int, str]]:
    """Other processes that have ``port`` open, as (pid, command line).

    Linux only (reads /proc). For a pseudo-terminal, the processes holding its
    master side are the device end (a Unix-port device, its supervisor) and
    are not counted.
    """
    if is_url(port) or not os.path.isdir("/proc"):
        return []
    try:
        rdev = os.stat(port).st_rdev
    except OSError:
        return []
    m = re.fullmatch(r"/dev/pts/(\d+)", os.path.realpath(port))
    pts_index = m.group(1) if m else None
    holders: set[int] = set()
    device_side: set[int] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                st = os.stat(f"{fd_dir}/{fd}")
            except OSError:
                continue
            if not stat.S_ISCHR(st.st_mode):
                continue
            if st.st_rdev == rdev:
                holders.add(pid)
            elif pts_index is not None and _pty_master_index(pid, fd) == pts_index:
                device_side.add(pid)
    out = []
    for pid in sorted(holders - device_side - {os.getpid()}):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            cmd = "?"
        out.append((pid, cmd[:120]))
    return out


def _pty_master_index(pid: int, fd: str) -> str | None:
    try:
        if not os.readlink(f"/proc/{pid}/fd/{fd}").endswith("ptmx"):
            return None
        info = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
    except OSError:
        return None
    m = re.search(r"^tty-index:\s*(\d+)", info, re.M)
    return m.group(1) if m else None


def check_port_free(port: str) -> None:
    held = port_holders(port)
    if held:
        who = "; ".join(f"pid {pid}: {cmd}" for pid, cmd in held)
        raise DeployError(
            f"serial port {port} is busy: open in {who}. Close that program (a monitor, a terminal, pytest)"
        )


def probe_repl(port: str, timeout: float = 5.0, baudrate: int = 115200) -> None:
    """Stop whatever runs (Ctrl-C) and wait for a MicroPython REPL prompt."""
    try:
        s = serial.serial_for_url(resolve(port), baudrate=baudrate, timeout=0.1)
    except (serial.SerialException, ValueError, OSError) as e:
        raise DeployError(f"cannot open serial port {port}: {e}") from e
    got = bytearray()
    try:
        deadline = time.monotonic() + timeout
        next_kick = 0.0
        while True:
            now = time.monotonic()
            if now >= next_kick:
                # Ctrl-C stops the firmware; Ctrl-B leaves a raw REPL left behind.
                s.write(b"\r\x03\x03\x02")
                s.flush()
                next_kick = now + 1.0
            got += s.read(s.in_waiting or 1)
            if b">>> " in got or b"raw REPL" in got:
                return
            if now > deadline:
                break
    except (serial.SerialException, OSError) as e:
        raise DeployError(f"serial port {port} failed while looking for the REPL: {e}") from e
    finally:
        with contextlib.suppress(Exception):
            s.close()
    tail = bytes(got[-160:])
    raise DeployError(
        f"no MicroPython REPL on {port}: sent Ctrl-C, got no '>>>' prompt within {timeout:g} s "
        f"(received {len(got)} bytes{': ' + repr(tail) if tail else ''}). "
        "Is MicroPython flashed (python -m host_harness flash)? Is this the board's console port?"
    )
