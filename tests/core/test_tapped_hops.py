"""Hops split at tapped brokers, without a device: journeys built with known times."""

from __future__ import annotations

from pathlib import Path

import pytest

from host_harness.core import budgets
from host_harness.core.clocktruth import UnixClockTruth
from host_harness.core.hops import LABELS, UNTAPPED_HOPS, split, tapped_hop
from host_harness.core.journey import Journey
from host_harness.core.results import JourneyRun

MS = 1_000_000
TRUTH = UnixClockTruth()


def journey(taps: dict[str, tuple[int | None, int | None]]) -> Journey:
    """Sent at 0 ms, received by the device at 10, pin at 11, report at 12, confirmed at 30 (host ms)."""
    us = 1000
    return Journey("mqtt", "c1", 1, "ON", 255, "mqtt", 0, 30 * MS, 10 * us, 11 * us, 12 * us, 2**62, taps=taps)


def rounded(hops: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 2) for k, v in hops.items()}


def test_one_tapped_broker_splits_both_network_hops_there() -> None:
    hops = rounded(split(journey({"broker": (4 * MS, 20 * MS)}), TRUTH).hops)
    assert hops["host_to_broker"] == 4.0 and hops["broker_to_device"] == 6.0
    assert hops["device_to_broker"] == 8.0 and hops["broker_to_host"] == 10.0
    assert "host_to_device" not in hops and "device_to_host" not in hops


def test_a_bridged_path_splits_at_each_broker_in_path_order() -> None:
    taps = {"cloud": (2 * MS, 25 * MS), "local": (5 * MS, 15 * MS)}
    hops = rounded(split(journey(taps), TRUTH).hops)
    assert [h for h in hops if h not in UNTAPPED_HOPS] == [
        "host_to_cloud",
        "cloud_to_local",
        "local_to_device",
        "device_to_local",
        "local_to_cloud",
        "cloud_to_host",
    ]
    assert hops["cloud_to_local"] == 3.0 and hops["local_to_cloud"] == 10.0


def test_a_direction_a_tap_missed_stays_unsplit() -> None:
    hops = split(journey({"broker": (4 * MS, None)}), TRUTH).hops
    assert "host_to_broker" in hops and "device_to_host" in hops and "device_to_broker" not in hops


def test_a_run_mixing_split_and_unsplit_journeys_summarises_each_hop_over_the_journeys_that_have_it() -> None:
    run = JourneyRun("mqtt")
    run.add(journey({"broker": (4 * MS, 20 * MS)}), TRUTH)
    run.add(journey({"broker": (None, None)}), TRUTH)
    present = run.hops_present()
    assert "host_to_broker" in present and "host_to_device" in present
    assert run.hop("host_to_broker").count == 1
    assert run.hop("host_to_device").count == 2  # the tapped journey counts as its parts' sum


def test_tapped_hop_names_are_the_budgets_names() -> None:
    assert tapped_hop("host", "cloud") == "host_to_cloud"
    with pytest.raises(ValueError, match="tapped brokers are named"):
        tapped_hop("host", "attic")


def test_a_budget_may_limit_a_tapped_hop(tmp_path: Path) -> None:
    f = tmp_path / "b.toml"
    f.write_text("[journey.mqtt.hops.cloud_to_local]\np99 = 20.0\n[journey.mqtt.hops.broker_to_device]\np50 = 5\n")
    b = budgets.load_file(f).for_kind("mqtt")
    assert b.hops == {"cloud_to_local": {"p99": 20.0}, "broker_to_device": {"p50": 5.0}}
    assert all(h in LABELS for h in b.hops)


def test_a_limit_on_an_unsplit_hop_still_holds_in_a_tapped_run() -> None:
    run = JourneyRun("mqtt")
    run.add(journey({"broker": (4 * MS, 20 * MS)}), TRUTH)
    assert "host_to_device" not in run.hops_present()
    assert round(run.hop("host_to_device").p50, 1) == 10.0  # host_to_broker 4 + broker_to_device 6
    v = budgets.evaluate(run, budgets.JourneyBudget(hops={"host_to_device": {"p50": 5.0}}))
    assert [(b.scope, b.metric) for b in v.breaches] == [("host_to_device", "p50")]
