"""The command line, as a user runs it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from host_harness import boards
from host_harness.broker import RunningBroker
from host_harness.device import unix_config
from host_harness.unix_device import UnixDevice

pytestmark = pytest.mark.unix_only


def harness(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "host_harness", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def test_run_measures_journeys_prints_a_table_and_writes_json(tmp_path: Path, broker: RunningBroker) -> None:
    out = tmp_path / "journeys.json"
    r = harness("run", "--count", "30", "--warmup", "5", "--broker", broker.info.url, "--json", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "end-to-end: published -> state confirmed on host" in r.stdout
    assert "device: command received -> pin written" in r.stdout
    assert "verdict: PASS" in r.stdout
    assert "30 MQTT journeys confirmed, 0 lost" in r.stdout
    data = json.loads(out.read_text())
    assert len(data["journeys"]) == 30
    ids = {j["id"] for j in data["journeys"]}
    assert len(ids) == 30
    for j in data["journeys"]:
        assert j["t_confirm_ns"] > j["t_send_ns"]
        assert 0 <= j["rx_to_pin_ms"] <= j["rx_to_tx_ms"]
    states = [j["state"] for j in data["journeys"][:4]]
    assert states == ["ON", "ON", "OFF", "ON"]  # on, brightness, off, on+brightness


def test_a_broken_budget_fails_the_run_and_says_which(tmp_path: Path, broker: RunningBroker) -> None:
    b = boards.load("unix")
    b["budget_ms"] = {"p50": 0.000001, "p99": 1000}
    bf = tmp_path / "tight.json"
    bf.write_text(json.dumps(b))
    r = harness("run", "--count", "5", "--warmup", "1", "--broker", broker.info.url, "--board", str(bf))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "p50" in r.stdout and "FAIL" in r.stdout
    assert "verdict: FAIL" in r.stdout


def test_run_against_a_serial_port_url(broker: RunningBroker) -> None:
    """--device takes a serial port: here the pty of a Unix-port device."""
    dev = UnixDevice(unix_config(boards.load("unix"), broker.info))
    port = dev.start()
    try:
        r = harness(
            "run", "--device", port, "--board", "unix", "--broker", broker.info.url, "--count", "10", "--warmup", "2"
        )
        assert r.returncode == 0, r.stdout + r.stderr
        assert "10 MQTT journeys confirmed" in r.stdout
    finally:
        dev.cleanup()


def test_bad_arguments_are_clear_errors() -> None:
    r = harness("run", "--broker", "ftp://nowhere", "--count", "1")
    assert r.returncode == 2
    assert "error:" in r.stderr and "ftp" in r.stderr
    r = harness("run", "--board", "no-such-board", "--count", "1")
    assert r.returncode == 2 and "unknown board" in r.stderr


def test_sim_runs_until_ctrl_c() -> None:
    p = subprocess.Popen(
        [sys.executable, "-m", "host_harness", "sim", "--device-id", "sim-test"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    assert p.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            line = p.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Ctrl-C to stop" in line:
                break
        text = "".join(lines)
        assert "mosquitto_pub" in text and "lightctl/sim-test/set" in text, text
        time.sleep(0.5)
        os.kill(p.pid, signal.SIGINT)
        rest, _ = p.communicate(timeout=20)
        assert p.returncode == 0, text + rest
        assert "stopping" in rest
    finally:
        if p.poll() is None:
            p.kill()
