"""The report of `lightctl run --report DIR`: facts, budget column, honest logs and plots."""

from __future__ import annotations

import html
import json
import re
import subprocess
import sys
from typing import Any

import pytest

from host_harness.broker import facts as broker_facts
from host_harness.broker.amqtt import AmqttBroker
from host_harness.broker.mosquitto import MosquittoBroker, find_mosquitto, mosquitto_version
from host_harness.broker.running import ExternalBroker, RunningBroker
from host_harness.core.hops import LABELS
from host_harness.link.mqtt_client import HostMqtt
from host_harness.paths import FIRMWARE_DIR
from host_harness.report import facts
from host_harness.report.hlog import read_interval_max
from host_harness.report.plots import percentile_curve, percentile_ticks, supported_percentile, x_of

pytestmark = pytest.mark.needs_process  # runs lightctl, which spawns its own device

COUNT = 30
BROKEN_HOP = "device_to_host"


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One run with its own broker and a budget that one mqtt hop breaks."""
    d = tmp_path_factory.mktemp("report")
    budget = d / "tight.toml"
    budget.write_text(f"[journey.mqtt]\np50 = 1000\np99 = 1000\n[journey.mqtt.hops.{BROKEN_HOP}]\np50 = 0.000001\n")
    kind = "mosquitto-tuned" if find_mosquitto() else "amqtt"
    args = ["run", "--count", str(COUNT), "--button-count", "5", "--warmup", "2", "--broker", kind]
    r = subprocess.run(
        [sys.executable, "-m", "host_harness", *args, "--budget", str(budget), "--report", str(d / "out")],
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode == 1, r.stdout + r.stderr  # the hop breaks its budget: the run fails
    out = d / "out"
    return {
        "dir": out,
        "page": (out / "index.html").read_text(),
        "data": json.loads((out / "journeys.json").read_text()),
        "broker": kind,
    }


def _row(page: str, label: str) -> str:
    m = re.search(rf"<tr[^>]*><td>{re.escape(html.escape(label))}</td>.*?</tr>", page)
    assert m, f"no table row for {label!r}"
    return m.group(0)


def test_the_page_has_a_budget_column_with_pass_and_fail_per_hop(report: dict[str, Any]) -> None:
    page = report["page"]
    assert "<th>budget</th><th>measured</th><th>result</th>" in page
    assert "verdict: FAIL" in page
    broken = _row(page, LABELS[BROKEN_HOP])  # the first table is the mqtt journey's
    assert "p50 ≤ 1e-06" in broken and "FAIL" in broken, broken
    mqtt_total = _row(page, "end-to-end")
    assert "p50 ≤ 1000" in mqtt_total and "p99 ≤ 1000" in mqtt_total and "PASS" in mqtt_total, mqtt_total
    assert page.count("<span class='pass'>PASS</span>") >= 3


def test_the_page_states_the_runs_time_firmware_broker_and_clock(report: dict[str, Any]) -> None:
    page, meta = report["page"], report["data"]["meta"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", meta["run started"]), meta
    version = re.search(r'^VERSION = "([^"]+)"', (FIRMWARE_DIR / "app.py").read_text(), re.M)
    assert version and meta["firmware version"] == version.group(1)
    assert f"sha256 {facts.source_hash()}" in meta["firmware hash"]
    assert meta["board"].startswith("unix")
    if report["broker"] == "mosquitto-tuned":
        exe = find_mosquitto()
        assert exe and meta["broker"].startswith(f"mosquitto {mosquitto_version(exe)} (tuned) on mqtt://")
        assert "set_tcp_nodelay true" in meta["broker settings"]
        assert "max_inflight_messages 20" in meta["broker settings"]
    else:
        assert meta["broker"].startswith("amqtt ") and "TCP_NODELAY on" in meta["broker settings"]
    assert re.fullmatch(r"±\d+ µs", meta["clock-sync uncertainty"]), meta
    for value in meta.values():
        assert html.escape(str(value)) in page


def test_hlog_interval_max_is_the_real_maximum(report: dict[str, Any]) -> None:
    for run in report["data"]["runs"]:
        real = max(s["e2e_ms"] for s in run["samples"])
        (logged,) = read_interval_max(report["dir"] / f"{run['kind']}.hlog")
        assert abs(logged - real) <= 0.01 * real, (run["kind"], logged, real)


def test_percentile_ticks_stop_where_the_sample_count_does() -> None:
    assert percentile_ticks(200) == [0.0, 50.0, 90.0, 99.0, 99.5]
    assert 99.99 not in percentile_ticks(200)
    assert percentile_ticks(1000)[-1] == pytest.approx(99.9)
    assert 99.99 in percentile_ticks(100_000)
    for n in (2, 7, 30, 50, 200, 999, 1000, 12345):
        ticks = percentile_ticks(n)
        assert ticks == sorted(ticks) and ticks[-1] <= supported_percentile(n) + 1e-9, (n, ticks)
        # the top tick is the supported percentile, or a standard one close to it
        assert x_of(supported_percentile(n)) / x_of(ticks[-1]) < 1.5, (n, ticks)


def test_the_percentile_curve_ends_at_p_1_minus_1_over_n() -> None:
    values = [float(v) for v in range(1, 201)]
    xs, ys = percentile_curve(values)
    assert xs[-1] == pytest.approx(x_of(supported_percentile(200)))
    assert ys[-1] == 199.0 and len(xs) == len(ys) == 199  # nearest rank at 99.5 %, not the max


def test_an_external_broker_is_named_by_its_sys_version_if_it_has_one(broker: RunningBroker) -> None:
    client = HostMqtt(broker.info, "facts").connect()
    try:
        said = broker_facts.sys_version(client)
    finally:
        client.close()
    f = broker_facts.facts(ExternalBroker(broker.info), said)
    assert f.name == "external broker"
    if isinstance(broker, MosquittoBroker):  # mosquitto publishes $SYS/broker/version, retained
        assert said and said.startswith("mosquitto version") and said in f.version
    elif isinstance(broker, AmqttBroker):  # the embedded amqtt has $SYS off
        assert said is None and f.version == "version unknown"
