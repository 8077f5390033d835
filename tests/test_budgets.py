"""Budgets: TOML files, verdicts that name the hop, figures for CI."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest

from host_harness.broker.running import RunningBroker
from host_harness.core import budgets
from host_harness.core.budgets import Verdict
from host_harness.core.hops import ClockMap
from host_harness.measure.journeys import Journeys
from host_harness.measure.load import closed_loop


def test_journeys_within_the_default_budget_pass(
    journey: Journeys, device_clock: ClockMap, assert_budget: Callable[..., Verdict]
) -> None:
    run = closed_loop(journey, "mqtt", 30, device_clock)
    v = assert_budget(run)
    assert v.ok and "end-to-end" in v.waterfall


def test_a_broken_hop_budget_fails_naming_that_hop(
    journey: Journeys, device_clock: ClockMap, assert_budget: Callable[..., Verdict], tmp_path: Path
) -> None:
    f = tmp_path / "tight.toml"
    f.write_text("[journey.serial]\np99 = 1000\n[journey.serial.hops.host_to_device]\np50 = 0.000001\n")
    run = closed_loop(journey, "serial", 10, device_clock)
    with pytest.raises(AssertionError) as e:
        assert_budget(run, budgets.load_file(f))
    msg = str(e.value)
    assert "BROKEN: hop host_to_device p50" in msg
    marked = [line for line in msg.splitlines() if "<< BROKE its budget" in line]
    assert len(marked) == 1 and marked[0].startswith("host sent -> device received")
    assert "host_to_device covers: serial line" in msg


def test_per_hop_sum_equals_end_to_end(journey: Journeys, device_clock: ClockMap) -> None:
    for kind in ("mqtt", "serial", "button"):
        run = closed_loop(journey, kind, 5, device_clock)
        assert len(run.journeys) == 5, run.lost
        for ht in run.hop_times:
            assert abs(ht.total_ms - ht.journey.e2e_ms) <= 0.02 * ht.journey.e2e_ms
            assert ht.hops["device_apply"] >= 0 and ht.hops["device_report"] >= 0
            assert ht.hops["host_to_device"] > 0 and ht.hops["device_to_host"] > 0


def _pytest(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


def test_figures_land_in_junit_xml_as_properties(tmp_path: Path, broker: RunningBroker) -> None:
    xml = tmp_path / "junit.xml"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            f"--junitxml={xml}",
            "--lightctl-broker",
            broker.info.url,
            f"{__file__}::test_journeys_within_the_default_budget_pass",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "record_property" not in r.stdout + r.stderr and "warning" not in r.stdout.lower(), r.stdout
    case = next(ET.parse(xml).iter("testcase"))
    props = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert props["mqtt.budget"] == "kept"
    assert float(props["mqtt.e2e.p50_ms"]) > 0
    assert "mqtt.device_apply.p99_ms" in props and props["mqtt.lost"] == "0"


INNER = """
from host_harness.measure.load import closed_loop

def test_a(journey, device_clock, assert_budget):
    assert_budget(closed_loop(journey, "mqtt", 5, device_clock))

test_b = test_c = test_a
"""


@pytest.mark.parametrize(
    ("option", "value", "said"),
    [("--lightctl-board", "no-such-board", "unknown board 'no-such-board'"), ("--lightctl-budget", "", "")],
)
def test_a_bad_board_or_budget_is_one_usage_error(tmp_path: Path, option: str, value: str, said: str) -> None:
    (tmp_path / "test_inner.py").write_text(INNER)
    if option == "--lightctl-budget":
        value = str(tmp_path / "bad.toml")
        (tmp_path / "bad.toml").write_text("[journey.mqtt]\nspeed = 1\n")
        said = "bad.toml"
    r = _pytest(option, value, "test_inner.py", cwd=tmp_path)
    assert r.returncode == pytest.ExitCode.USAGE_ERROR, r.stdout + r.stderr
    errors = [line for line in (r.stdout + r.stderr).splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1 and said in errors[0], r.stdout + r.stderr


def test_a_broken_budget_fails_with_the_waterfall_only(tmp_path: Path, broker: RunningBroker) -> None:
    (tmp_path / "test_inner.py").write_text(textwrap.dedent(INNER).replace("test_b = test_c = test_a", ""))
    (tmp_path / "tiny.toml").write_text("[journey.mqtt]\np50 = 0.000001\n")
    r = _pytest("--lightctl-broker", broker.info.url, "--lightctl-budget", "tiny.toml", "test_inner.py", cwd=tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode == pytest.ExitCode.TESTS_FAILED, out
    assert "budget BROKEN: end-to-end p50" in out and "device report -> host received" in out, out
    assert "host_harness/" not in out and "JourneyRun(" not in out, out
