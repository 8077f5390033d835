"""Budgets: TOML files, verdicts that name the hop, figures for CI."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest
from hoptruth import check_hops_against_truth

from host_harness.broker.running import RunningBroker
from host_harness.core import budgets
from host_harness.core.budgets import Verdict
from host_harness.core.hops import UNTAPPED_HOPS, ClockMap
from host_harness.dut.device import Device
from host_harness.measure.clocksync import SyncedClock, unix_clock_truth
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


@pytest.mark.needs_process  # the true clock is read from the Unix port's REPL
def test_synced_hops_agree_with_the_true_clock(journey: Journeys, device: Device, device_clock: ClockMap) -> None:
    assert isinstance(device_clock, SyncedClock)
    truth = unix_clock_truth(device)
    for kind in ("mqtt", "serial", "button"):
        run = closed_loop(journey, kind, 5, device_clock)
        assert len(run.journeys) == 5, run.lost
        checked = check_hops_against_truth(run.hop_times, truth, device_clock.model.error_bound_us)
        assert checked == sum(len(ht.hops) for ht in run.hop_times) >= 5 * len(UNTAPPED_HOPS)


def _pytest(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider", *args],
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
            "-n",
            "0",  # one test: no xdist workers (pyproject's addopts asks for two)
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
