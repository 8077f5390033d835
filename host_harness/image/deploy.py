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

import hashlib
import json
import logging
import os
import re
import secrets
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from host_harness.dut import boards
from host_harness.dut.device import Device
from host_harness.image import firmware_build
from host_harness.image.mpremote import RESET, device_files, mpremote, mpremote_error
from host_harness.image.ports import DeployError, check_port_exists, check_port_free, probe_repl
from host_harness.link.serial_link import SerialLink
from host_harness.paths import FIRMWARE_DIR

log = logging.getLogger(__name__)


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


def fw_id_file(src: Path = FIRMWARE_DIR) -> Local:
    """The build id the firmware reports in info as ``fw``."""
    return Local(firmware_build.FW_ID_FILE, (firmware_build.firmware_hash(src) + "\n").encode())


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
    say: Callable[[str], None] | None = None,
) -> DeployResult:
    """Copy what changed, reset, wait for the firmware to answer info."""
    say = say or log.info
    bdef = boards.load(board)
    check_port_exists(port)
    check_port_free(port)
    probe_repl(port, repl_timeout)

    names = [p.name for p in firmware_build.sources()]
    names += [n.replace(".py", ".mpy") for n in names if n != "main.py"]
    dev = device_files(port, [*names, "board.json", "config.json", firmware_build.FW_ID_FILE])

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
    want.append(fw_id_file())
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
            raise DeployError(f"could not reset the device: {mpremote_error(port, r)}")
        say("reset; waiting for the firmware to answer info")
        res.info = wait_booted(port, bdef, boot_timeout)
        i = res.info
        say(
            f"booted: device {i.get('device_id')}, firmware {i.get('version')} ({i.get('fw') or 'no build id'}), "
            f"board {i.get('board')}, "
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
    last = ("board.json", "config.json", firmware_build.FW_ID_FILE)
    order = sorted(files, key=lambda f: (f.name == "main.py", f.name in last, f.name))
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
    raise DeployError(f"copying files to {port} failed: {mpremote_error(port, r)}")


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
