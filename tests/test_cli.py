"""The command line, as a user runs it."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import fields
from pathlib import Path

import pytest
from cli_runner import run_cli
from hoptruth import SERIAL_SYNC_TARGET_US, check_hops_against_truth
from paho.mqtt import publish

from host_harness.broker.running import RunningBroker
from host_harness.core.clocktruth import UnixClockTruth
from host_harness.core.hops import LABELS, HopTimes
from host_harness.core.journey import Journey
from host_harness.dut import boards
from host_harness.dut.device import unix_config
from host_harness.dut.unix_device import UnixDevice

pytestmark = pytest.mark.needs_process  # the CLI spawns its own devices


def harness(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, timeout=timeout)


def test_run_measures_journeys_prints_a_table_and_writes_json(tmp_path: Path, broker: RunningBroker) -> None:
    out = tmp_path / "journeys.json"
    r = harness(
        "run", "--no-budget",
        "--count", "30", "--button-count", "5", "--warmup", "5", "--broker", broker.info.url, "--json", str(out)
    )
    assert r.returncode == 0, r.stdout + r.stderr
    for line in (
        "host sent -> device received",
        "device: received -> pin written",
        "end-to-end",
        "mqtt journeys (closed): 30 confirmed, 0 lost, 0 duplicated",
        "serial journeys (closed): 30 confirmed",
        "button journeys (closed): 5 confirmed",
        "verdict: PASS",
    ):
        assert line in r.stdout, r.stdout
    data = json.loads(out.read_text())
    runs = {run["kind"]: run for run in data["runs"]}
    mqtt = runs["mqtt"]["samples"]
    assert len(mqtt) == 30 and len({j["id"] for j in mqtt}) == 30
    for j in mqtt:
        assert j["t_confirm_ns"] > j["t_send_ns"]
        assert 0 <= j["rx_to_pin_ms"] <= j["rx_to_tx_ms"]
    # the hops measured with the run's synced clock agree with the true clock (the device's
    # ticks are this host's CLOCK_MONOTONIC), within the serial clock-sync target
    hop_times = [HopTimes(Journey(**{f.name: j[f.name] for f in fields(Journey)}), j["hops_ms"]) for j in mqtt]
    assert check_hops_against_truth(hop_times, UnixClockTruth(), SERIAL_SYNC_TARGET_US) >= 4 * 30
    assert [j["state"] for j in mqtt[:4]] == ["ON", "ON", "OFF", "ON"]  # on, brightness, off, on+brightness


def test_a_broken_budget_fails_the_run_and_names_the_hop(tmp_path: Path, broker: RunningBroker) -> None:
    bf = tmp_path / "tight.toml"
    bf.write_text("[journey.mqtt]\np99 = 1000\n[journey.mqtt.hops.device_to_host]\np50 = 0.000001\n")
    r = harness(
        "run", "--count", "5", "--warmup", "1", "--journeys", "mqtt", "--broker", broker.info.url, "--budget", str(bf)
    )
    assert r.returncode == 1, r.stdout + r.stderr
    assert "budget BROKEN: hop device_to_host p50" in r.stdout
    line = next(x for x in r.stdout.splitlines() if x.startswith("device report -> host received"))
    assert "<< BROKE its budget" in line
    assert "verdict: FAIL" in r.stdout


def test_a_broken_end_to_end_budget_blames_the_hop_of_its_tail(tmp_path: Path, broker: RunningBroker) -> None:
    bf = tmp_path / "tight-e2e.toml"
    bf.write_text("[journey.mqtt]\np99 = 0.001\n")
    out = tmp_path / "journeys.json"
    r = harness(
        "run", "--count", "5", "--warmup", "1", "--journeys", "mqtt", "--broker", broker.info.url,
        "--budget", str(bf), "--json", str(out),
    )  # fmt: skip
    assert r.returncode == 1, r.stdout + r.stderr
    (blamed,) = json.loads(out.read_text())["verdicts"][0]["blamed"]
    assert blamed["metric"] == "p99"
    marked = [x for x in r.stdout.splitlines() if "<< " in x]
    assert len(marked) == 1 and "of the end-to-end p99 tail" in marked[0], r.stdout
    assert marked[0].startswith(LABELS[blamed["hop"]])
    assert f"end-to-end p99 is {blamed['hop']}'s:" in r.stdout
    assert f"{blamed['hop']} covers: " in r.stdout


def test_report_dir_has_json_histogram_log_plots_and_html(tmp_path: Path, broker: RunningBroker) -> None:
    d = tmp_path / "report"
    r = harness(
        "run", "--no-budget",
        "--count", "20", "--button-count", "3", "--warmup", "2", "--broker", broker.info.url, "--report", str(d)
    )
    assert r.returncode == 0, r.stdout + r.stderr
    data = json.loads((d / "journeys.json").read_text())
    assert {run["kind"] for run in data["runs"]} == {"mqtt", "serial", "button"}
    assert "HISTFAA" in (d / "mqtt.hlog").read_text()
    for png in ("latency-percentiles.png", "waterfall.png"):
        assert (d / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (d / "index.html").read_text()
    assert "data:image/png;base64," in page and "mqtt journey" in page


def test_open_loop_run_counts_every_command(broker: RunningBroker) -> None:
    r = harness(
        "run", "--no-budget",
        "--count", "200", "--rate", "200", "--journeys", "mqtt", "--warmup", "2", "--broker", broker.info.url
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "mqtt journeys (open@200/s): 200 confirmed, 0 lost, 0 duplicated" in r.stdout
    assert "host: intended start -> sent" in r.stdout
    # How the sender kept its schedule, in this machine's numbers.
    assert re.search(r"sender \(mqtt, open@200/s\): its sleeps woke [0-9.]+ ms late at p50 .* of \d+ sleeps", r.stdout)


def test_run_against_a_serial_port_url(broker: RunningBroker) -> None:
    """--device takes a serial port: here the pty of a Unix-port device."""
    dev = UnixDevice(unix_config(boards.load("unix"), broker.info))
    port = dev.start()
    try:
        r = harness(
            "run",
            "--no-budget",
            "--journeys",
            "mqtt,serial",
            "--device",
            port,
            "--board",
            "unix",
            "--broker",
            broker.info.url,
            "--count",
            "10",
            "--warmup",
            "2",
        )
        assert r.returncode == 0, r.stdout + r.stderr
        assert "mqtt journeys (closed): 10 confirmed" in r.stdout
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
    out: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [out.put(line) for line in p.stdout or ()], daemon=True)
    reader.start()
    lines: list[str] = []

    def read_until(what: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while not lines or what not in lines[-1]:
            try:
                lines.append(out.get(timeout=max(deadline - time.monotonic(), 0)))
            except queue.Empty:
                msg = f"timed out after {timeout:g} s waiting for {what!r} from sim:\n" + "".join(lines)
                raise AssertionError(msg) from None
        return "".join(lines)

    try:
        text = read_until("Ctrl-C to stop")
        assert "mosquitto_pub" in text and "lightctl/sim-test/set" in text, text
        # do what the printed hint says, and see the device's answer follow before stopping it
        m = re.search(r"mosquitto_pub -h (\S+) -p (\d+) -t (\S+) -m '(.*)'", text)
        assert m is not None, text
        publish.single(m[3], m[4], qos=1, hostname=m[1], port=int(m[2]))
        read_until("try-1", timeout=20)
        os.kill(p.pid, signal.SIGINT)
        p.wait(timeout=20)
        reader.join(timeout=5)  # the pipe closed with the process: every line is in the queue
        while not out.empty():
            lines.append(out.get())
        assert p.returncode == 0, "".join(lines)
        assert "stopping" in "".join(lines)
    finally:
        if p.poll() is None:
            p.kill()
