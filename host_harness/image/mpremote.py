"""mpremote: run it on a port, list the device's files with their hashes."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass

from host_harness import children
from host_harness.dut.labgrid_place import resolve
from host_harness.image.ports import DeployError


# -- mpremote ----------------------------------------------------------------
def mpremote(port: str, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """``mpremote connect PORT resume ARGS``: no soft reset, so the Unix port works too."""
    cmd = [sys.executable, "-m", "mpremote", "connect", resolve(port), "resume", *args]
    try:
        return children.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise DeployError(f"mpremote on {port} did not finish within {timeout:g} s ({' '.join(args[:2])})") from e


def mpremote_error(port: str, r: subprocess.CompletedProcess[str]) -> str:
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
    raise DeployError(f"could not list the files on {port}: {mpremote_error(port, r)}")
