"""The test suite against a board reached only through its serial port, as a user runs it on a real one.

A virtual board (the MicroPython Unix port on a pty, with a filesystem of its own, at its REPL like
a freshly flashed ESP32) stands in for the board. This does what a user does with a real one:

  1. a Mosquitto with stock settings on a free loopback port: the lab's broker, for the board and the tests;
  2. python -m host_harness.dut.virtual_board --link WORK/ttyV0 --dir WORK/fs --heapsize 80k
  3. lightctl deploy --device WORK/ttyV0 --board unix --config WORK/device.json
  4. python -m pytest --lightctl-device=WORK/ttyV0 --lightctl-board=unix --lightctl-broker=mqtt://127.0.0.1:PORT -rs

Tests that need what a board cannot give (process control, a config of their own) are skipped with
the reason; everything else must pass. Arguments are passed to pytest; the exit status is pytest's
(2 when the board or the deploy fails first).

    .venv/bin/python tools/board_run.py [pytest options]
"""

from __future__ import annotations

import json
import secrets
import select
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from host_harness.broker.start import start_broker
from host_harness.dut.unix_device import DEFAULT_HEAPSIZE

ROOT = Path(__file__).resolve().parent.parent
BOARD = "unix"
READY_TIMEOUT = 30.0  # seconds for the virtual board to print its port


def say(cmd: list[str]) -> None:
    print("$ " + shlex.join(cmd), flush=True)


def start_board(work: Path) -> tuple[subprocess.Popen[str], str]:
    (work / "fs").mkdir()
    cmd = [sys.executable, "-m", "host_harness.dut.virtual_board", "--link", str(work / "ttyV0")]
    cmd += ["--dir", str(work / "fs"), "--heapsize", DEFAULT_HEAPSIZE]  # the Unix port's ESP32-like heap
    say(cmd)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, cwd=ROOT)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], READY_TIMEOUT)
    line = proc.stdout.readline() if ready else ""
    if not line.startswith("port "):
        proc.kill()
        proc.wait()
        raise RuntimeError(f"the virtual board did not print its port within {READY_TIMEOUT:g} s (said {line!r})")
    return proc, line.split(" ", 1)[1].strip()


def main(argv: list[str]) -> int:
    lightctl = str(Path(sys.executable).parent / "lightctl")
    with tempfile.TemporaryDirectory(prefix="lightctl-board-run-") as tmp, start_broker("mosquitto") as broker:
        work = Path(tmp)
        info = broker.info
        print(f"broker: {broker.describe()}", flush=True)
        board, port = start_board(work)
        try:
            cfg = work / "device.json"  # what a user writes for a real board (with Wi-Fi)
            mqtt = {"host": info.host, "port": info.port, "user": info.username, "password": info.password}
            cfg.write_text(json.dumps({"device_id": f"board-{secrets.token_hex(3)}", "mqtt": mqtt}))
            cmd = [lightctl, "deploy", "--device", port, "--board", BOARD, "--config", str(cfg)]
            say(cmd)
            if subprocess.run(cmd, cwd=ROOT, stdin=subprocess.DEVNULL).returncode != 0:
                print("error: deploying to the virtual board failed", file=sys.stderr)
                return 2
            # --opt=VALUE: pytest takes a bare path argument for a test path (and its folder for the rootdir)
            cmd = [sys.executable, "-m", "pytest", f"--lightctl-device={port}", f"--lightctl-board={BOARD}"]
            cmd += [f"--lightctl-broker={info.url}", "-rs", *argv]
            say([c.replace(info.url, info.redacted_url()) for c in cmd])
            return subprocess.run(cmd, cwd=ROOT, stdin=subprocess.DEVNULL).returncode
        finally:
            board.terminate()
            board.wait(timeout=30)


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
