"""Put the firmware, a board definition and a device config on a board.

``deploy`` copies ``firmware/*.py`` (or .mpy precompiled for the board's
MicroPython, when mpy-cross emits the version the board loads; main.py always
stays source), the board definition as ``board.json`` and the device config as
``config.json`` with mpremote, only the files whose sha256 differs from the
copy on the device (size when the device has no hashlib). It then resets the
board and waits until the firmware answers ``info`` on the serial link.

Reset: the board runs ``machine.reset()``; a port without it (the Unix port)
runs ``machine.soft_reset()``, which ends a Unix-port process. ``VirtualBoard``
is a Unix-port interpreter on a pty standing in for a freshly flashed board:
its filesystem is its working directory, and when its process ends it starts
again (running main.py if there is one), as a board boots after a reset.

The config may hold secrets (Wi-Fi and MQTT passwords): it is staged in a
private temporary directory and never printed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pty
import re
import secrets
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
import tty
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import serial

from . import boards, firmware_build
from .device import Device
from .paths import FIRMWARE_DIR
from .serial_link import SerialLink
from .unix_device import find_micropython


class DeployError(RuntimeError):
    """Deploying failed; the message says what to do about it."""


# -- serial port checks ------------------------------------------------------
def is_url(port: str) -> bool:
    return "://" in port


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
        s = serial.serial_for_url(port, baudrate=baudrate, timeout=0.1)
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


# -- mpremote ----------------------------------------------------------------
def mpremote(port: str, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """``mpremote connect PORT resume ARGS``: no soft reset, so the Unix port works too."""
    cmd = [sys.executable, "-m", "mpremote", "connect", port, "resume", *args]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise DeployError(f"mpremote on {port} did not finish within {timeout:g} s ({' '.join(args[:2])})") from e


def _mpremote_error(port: str, r: subprocess.CompletedProcess[str]) -> str:
    lines = [ln for ln in (r.stderr + "\n" + r.stdout).splitlines() if ln.strip()]
    msg = lines[-1].strip() if lines else f"exit status {r.returncode}"
    if "failed to access" in msg:
        return f"cannot open serial port {port}: another program may hold it ({msg})"
    return msg


LISTING = """\
import os, sys, json
try:
    import hashlib, binascii
except ImportError:
    hashlib = None
def _h(n):
    if hashlib is None:
        return None
    h = hashlib.sha256()
    b = bytearray(512)
    with open(n, 'rb') as f:
        while True:
            k = f.readinto(b)
            if not k:
                break
            h.update(memoryview(b)[:k])
    return binascii.hexlify(h.digest()).decode()
r = {}
for n in NAMES:
    try:
        s = os.stat(n)
    except OSError:
        continue
    r[n] = [s[6], _h(n)] if s[0] & 0o170000 == 0o100000 else [-1, None]
free = -1
try:
    v = os.statvfs('.')
    free = (v[1] or v[0]) * v[4]
except Exception:
    pass
print('LIGHTCTL-FS', json.dumps({'mpy': getattr(sys.implementation, '_mpy', 0), 'platform': sys.platform,
    'hashlib': hashlib is not None, 'free': free, 'files': r}))
"""

RESET = "import machine\n(getattr(machine, 'reset', None) or machine.soft_reset)()\n"


@dataclass
class DeviceFiles:
    mpy: str | None  # "6.3", or None when the device does not say
    platform: str
    hashlib: bool
    free: int  # bytes, -1 if unknown
    files: dict[str, tuple[int, str | None]]  # name -> (size, sha256 hex or None); size -1: not a regular file


def device_files(port: str, names: list[str], timeout: float = 60.0) -> DeviceFiles:
    r = mpremote(port, "exec", LISTING.replace("NAMES", repr(sorted(names))), timeout=timeout)
    for line in r.stdout.splitlines():
        if line.startswith("LIGHTCTL-FS "):
            d = json.loads(line[len("LIGHTCTL-FS ") :])
            v = int(d.get("mpy") or 0)
            return DeviceFiles(
                mpy=f"{v & 0xFF}.{(v >> 8) & 3}" if v else None,
                platform=str(d.get("platform", "?")),
                hashlib=bool(d.get("hashlib")),
                free=int(d.get("free", -1)),
                files={k: (int(s), h) for k, (s, h) in d.get("files", {}).items()},
            )
    raise DeployError(f"could not list the files on {port}: {_mpremote_error(port, r)}")


# -- what to deploy ----------------------------------------------------------
@dataclass
class Local:
    name: str  # name on the device
    data: bytes
    secret: bool = False

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def mpy_dir(src: Path = FIRMWARE_DIR) -> Path:
    """Every module but main.py compiled by mpy-cross, cached by content."""
    try:
        return firmware_build.compile_tree(src)
    except firmware_build.BuildError as e:
        raise DeployError(f"{e}, or deploy with --no-mpy") from None


def firmware_files(use_mpy: bool, src: Path = FIRMWARE_DIR) -> list[Local]:
    """The firmware as the device should hold it: main.py, other modules .py or .mpy."""
    built = mpy_dir(src) if use_mpy else None
    out: list[Local] = []
    for p in firmware_build.sources(src):
        if built is not None and p.name != "main.py":
            out.append(Local(f"{p.stem}.mpy", (built / f"{p.stem}.mpy").read_bytes()))
        else:
            out.append(Local(p.name, p.read_bytes()))
    return out


def config_file(config: dict[str, Any]) -> Local:
    cfg = dict(config)
    cfg["board"] = "board.json"  # the board definition deployed next to it
    return Local("config.json", (json.dumps(cfg, indent=1, sort_keys=True) + "\n").encode(), secret=True)


def board_file(bdef: dict[str, Any]) -> Local:
    return Local("board.json", (json.dumps(bdef, indent=1, sort_keys=True) + "\n").encode())


def default_config() -> dict[str, Any]:
    return {"device_id": f"light-{secrets.token_hex(3)}", "base_topic": "lightctl"}


def load_config(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.exists():
        raise DeployError(f"config file {p} does not exist")
    try:
        cfg = json.loads(p.read_text())
    except ValueError as e:
        # The message names the position only, never the file's content.
        raise DeployError(f"config file {p} is not valid JSON (line {getattr(e, 'lineno', '?')})") from None
    if not isinstance(cfg, dict):
        raise DeployError(f"config file {p} must hold a JSON object")
    return cfg


def _counterpart(name: str) -> str | None:
    stem, ext = os.path.splitext(name)
    if stem == "main" or ext not in (".py", ".mpy"):
        return None
    return stem + (".mpy" if ext == ".py" else ".py")


# -- deploy ------------------------------------------------------------------
@dataclass
class DeployResult:
    port: str
    mpy: bool
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        return f"{len(self.changed)} changed, {len(self.unchanged)} unchanged, {len(self.removed)} removed"


def _kb(n: int) -> str:
    return f"{n / 1024:.1f} kB"


def deploy(
    port: str,
    board: str,
    config: dict[str, Any] | None = None,
    use_mpy: bool = True,
    force: bool = False,
    reset: bool = True,
    boot_timeout: float = 30.0,
    repl_timeout: float = 5.0,
    say: Callable[[str], None] = print,
) -> DeployResult:
    """Copy what changed, reset, wait for the firmware to answer info."""
    bdef = boards.load(board)
    check_port_exists(port)
    check_port_free(port)
    probe_repl(port, repl_timeout)

    names = [p.name for p in firmware_build.sources()]
    names += [n.replace(".py", ".mpy") for n in names if n != "main.py"]
    dev = device_files(port, [*names, "board.json", "config.json"])

    mpy = False
    why = "--no-mpy: deploying .py sources"
    if use_mpy:
        cmd = firmware_build._mpy_cross()
        have = firmware_build.cross_mpy_version(cmd) if cmd else None
        mpy = dev.mpy is not None and have == dev.mpy
        if mpy:
            why = f"mpy-cross emits v{have}: deploying precompiled .mpy"
        elif cmd is None:
            why = "mpy-cross not installed: deploying .py sources"
        else:
            why = f"mpy-cross emits v{have}, the device loads v{dev.mpy}: deploying .py sources"
    say(f"device on {port}: MicroPython {dev.platform}, mpy v{dev.mpy or '?'}; {why}")
    if not dev.hashlib:
        say("note: the device has no hashlib: files are compared by size (use --force after same-size edits)")

    want = firmware_files(mpy)
    want.append(board_file(bdef))
    if config is not None:
        want.append(config_file(config))
    elif "config.json" in dev.files:
        say("config: no --config given: keeping the device's config.json")
    else:
        want.append(config_file(default_config()))
        say("config: no --config given and none on the device: writing a minimal one (no Wi-Fi, no MQTT)")

    res = DeployResult(port=port, mpy=mpy)
    copy: list[Local] = []
    for f in want:
        have_size, have_hash = dev.files.get(f.name, (None, None))
        same = have_size == len(f.data) and (have_hash == f.sha256 if dev.hashlib else True)
        if force or not same:
            copy.append(f)
            res.changed.append(f.name)
        else:
            res.unchanged.append(f.name)
    wanted = {f.name for f in want}
    for f in want:
        other = _counterpart(f.name)
        if other and other in dev.files and other not in wanted:
            res.removed.append(other)

    need = sum(len(f.data) - max(0, dev.files.get(f.name, (0, None))[0]) for f in copy)
    need -= sum(max(0, dev.files[n][0]) for n in res.removed)
    if dev.free >= 0 and need > dev.free:
        raise DeployError(
            f"not enough space on the device: the changed files need {_kb(need)} more, {_kb(dev.free)} free. "
            "Remove files from the device (mpremote fs rm), or deploy .mpy files (smaller than sources)"
        )

    for n in res.removed:
        say(f"  remove {n}")
    for f in copy:
        say(f"  copy   {f.name} ({_kb(len(f.data))})")
    if copy or res.removed:
        _copy(port, copy, res.removed)
    say(f"{res.summary()}")

    if reset:
        r = mpremote(port, "exec", "--no-follow", RESET, timeout=30)
        if r.returncode != 0:
            raise DeployError(f"could not reset the device: {_mpremote_error(port, r)}")
        say("reset; waiting for the firmware to answer info")
        res.info = wait_booted(port, bdef, boot_timeout)
        i = res.info
        say(
            f"booted: device {i.get('device_id')}, firmware {i.get('version')}, board {i.get('board')}, "
            f"platform {i.get('platform')}, mqtt {i.get('mqtt')}"
        )
    return res


def _cp_force() -> list[str]:
    """mpremote 1.23+ skips a copy whose hash matches unless forced; we compared already."""
    try:
        major, minor = (int(x) for x in metadata.version("mpremote").split(".")[:2])
    except (metadata.PackageNotFoundError, ValueError):
        return ["-f"]
    return ["-f"] if (major, minor) >= (1, 23) else []


def _copy(port: str, files: list[Local], remove: list[str]) -> None:
    # Modules first, then board and config, main.py last: a copy that stops
    # half-way leaves a board that does not start a half-new firmware.
    order = sorted(files, key=lambda f: (f.name == "main.py", f.name in ("board.json", "config.json"), f.name))
    with tempfile.TemporaryDirectory(prefix="lightctl-deploy-") as tmp:  # mode 0700: the config may hold secrets
        args: list[str] = []
        for n in remove:
            args += ["fs", "rm", f":{n}", "+"]
        for f in order:
            p = Path(tmp) / f.name
            p.write_bytes(f.data)
            args += ["fs", "cp", *_cp_force(), str(p), f":{f.name}", "+"]
        total = sum(len(f.data) for f in files)
        r = mpremote(port, *args[:-1], timeout=60 + total / 1000)
    if r.returncode == 0:
        return
    out = r.stderr + r.stdout
    done = len(re.findall(r"^cp ", r.stdout, re.M)) - 1
    if re.search(r"No space left|ENOSPC|Errno 28", out):
        m = re.search(r"cp: ([^:\s]+): ", out)
        what = m.group(1) if m else "a file"
        raise DeployError(
            f"the device's filesystem is full: copying {what} failed after {max(done, 0)} of {len(files)} files. "
            "The firmware on the device is now incomplete: remove files (mpremote fs rm) and deploy again"
        )
    raise DeployError(f"copying files to {port} failed: {_mpremote_error(port, r)}")


def wait_booted(port: str, bdef: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
    """Open the serial link and wait until the firmware answers info."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            link = SerialLink(port, name="deployed device")
            break
        except ConnectionError:
            # A board with native USB drops off the bus while it resets.
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    try:
        return Device(link, bdef).wait_boot(max(1.0, deadline - time.monotonic()))
    finally:
        link.close()


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
        self.proc = subprocess.Popen(
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


def run(args: Any) -> int:
    config = load_config(args.config) if args.config else None
    deploy(
        args.port,
        args.board,
        config,
        use_mpy=not args.no_mpy,
        force=args.force,
        reset=not args.no_reset,
        boot_timeout=args.boot_timeout,
        repl_timeout=args.repl_timeout,
    )
    return 0
