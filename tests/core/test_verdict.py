"""Verdicts and budget files without a device: runs built from samples directly."""

from __future__ import annotations

from pathlib import Path

import pytest

from host_harness.core import budgets
from host_harness.core.budgets import JourneyBudget
from host_harness.core.hops import LABELS, HopTimes, covers
from host_harness.core.journey import Journey
from host_harness.core.results import JourneyRun
from host_harness.dut import boards
from host_harness.paths import BOARDS_DIR

NORMAL = {"host_to_device": 0.1, "device_apply": 0.05, "device_report": 0.01, "device_to_host": 0.2}


def journey_run(kind: str, samples: list[dict[str, float]], lost: int = 0) -> JourneyRun:
    """A run whose journeys take exactly the given hop times (ms)."""
    run = JourneyRun(kind)
    for i, hops in enumerate(samples):
        full = {"host_queue": 0.0, "device_sense": 0.0, **hops}
        e2e_ns = round(sum(full.values()) * 1e6)
        j = Journey(kind, f"c{i}", i + 1, "ON", 255, kind, 0, e2e_ns, 0, 0, 0, 2**30)
        run.journeys.append(j)
        run.hop_times.append(HopTimes(j, full))
    run.lost = [f"command l{i} never confirmed" for i in range(lost)]
    return run


def with_(n: int, **hops: float) -> list[dict[str, float]]:
    return [dict(NORMAL, **hops) for _ in range(n)]


def marked(waterfall: str, hop: str) -> str:
    return next(line for line in waterfall.splitlines() if line.startswith(LABELS[hop]))


def test_end_to_end_tail_is_blamed_on_its_hop_beside_a_hop_that_broke_its_own_limit() -> None:
    # The measured case: device_apply breaks its own p99 limit in journeys that
    # are not slow overall, while the end-to-end p99 comes from host_to_device.
    samples = with_(190) + with_(7, device_apply=0.137) + with_(3, host_to_device=2.813)
    run = journey_run("mqtt", samples)
    jb = JourneyBudget(total={"p99": 1.0}, hops={"device_apply": {"p99": 0.1}})
    v = budgets.evaluate(run, jb)
    assert not v.ok
    assert {(b.scope, b.metric) for b in v.breaches} == {("total", "p99"), ("device_apply", "p99")}
    assert [(b.metric, b.hop) for b in v.blames] == [("p99", "host_to_device")]
    assert "BROKE its budget" in marked(v.waterfall, "device_apply")
    assert "end-to-end p99 tail" in marked(v.waterfall, "host_to_device")
    assert "<<" not in marked(v.waterfall, "device_to_host")  # the largest mean share, not the tail's
    assert f"host_to_device covers: {covers('mqtt', 'host_to_device')}" in v.waterfall
    assert f"device_apply covers: {covers('mqtt', 'device_apply')}" in v.waterfall
    assert "end-to-end p99 is host_to_device's: 2.813 of 3.073 ms (92%) in the 3 slowest journeys" in v.waterfall


def test_blame_comes_from_the_slow_journeys_not_from_each_hops_own_percentile() -> None:
    # host_to_device has the highest p99 of its own (five 1.2 ms spikes), but
    # the journeys that make the end-to-end p99 are slow in device_to_host.
    samples = with_(193) + with_(5, host_to_device=1.2) + with_(2, device_to_host=1.6)
    run = journey_run("serial", samples)
    assert run.hop("host_to_device").p99 > run.hop("device_to_host").p99
    v = budgets.evaluate(run, JourneyBudget(total={"p99": 1.0}))
    assert [b.hop for b in v.blames] == ["device_to_host"]
    assert "end-to-end p99 tail" in marked(v.waterfall, "device_to_host")
    assert "<<" not in marked(v.waterfall, "host_to_device")
    assert "device_to_host covers: serial line and host reader" in v.waterfall


def test_the_tail_of_max_is_the_slowest_journey() -> None:
    samples = with_(50) + with_(1, device_report=4.0) + with_(1, host_to_device=3.0)
    v = budgets.evaluate(journey_run("mqtt", samples), JourneyBudget(total={"max": 2.0}))
    assert [(b.hop, b.tail) for b in v.blames] == [("device_report", 1)]


def test_loss_alone_says_lost_and_marks_no_hop() -> None:
    run = journey_run("mqtt", with_(100), lost=2)
    v = budgets.evaluate(run, JourneyBudget(total={"p99": 50.0}))
    assert not v.ok and not v.blames
    assert "BROKEN: lost 2 > 0 (journeys never confirmed)" in v.message()
    assert "<<" not in v.waterfall and "covers" not in v.waterfall
    assert "lost 2 > 0 (journeys never confirmed): loss, not a hop's time, broke this" in v.waterfall


def test_a_kept_budget_marks_nothing() -> None:
    v = budgets.evaluate(journey_run("mqtt", with_(100)), JourneyBudget(total={"p99": 50.0}))
    assert v.ok and "<<" not in v.waterfall and not v.blames


# -- budget files --------------------------------------------------------------


def test_a_users_hop_limit_keeps_the_boards_end_to_end_and_loss_limits(tmp_path: Path) -> None:
    f = tmp_path / "hop-only.toml"
    f.write_text("[journey.mqtt.hops.host_to_device]\np99 = 3.0\n")
    board = budgets.load_file(BOARDS_DIR / "unix.budget.toml").for_kind("mqtt")
    mine = budgets.for_board(boards.load("unix"), f).for_kind("mqtt")
    assert mine.total == board.total and mine.total  # the board's end-to-end limits stay
    assert mine.hops == {**board.hops, "host_to_device": {"p99": 3.0}}
    assert (mine.lost, mine.duplicated) == (board.lost, board.duplicated)
    # and a lost journey still fails it
    v = budgets.evaluate(journey_run("mqtt", with_(10), lost=1), mine)
    assert not v.ok


def test_a_users_limit_replaces_only_that_limit(tmp_path: Path) -> None:
    f = tmp_path / "mine.toml"
    f.write_text("[journey.mqtt]\np99 = 7.5\nlost = 2\n[journey.mqtt.hops.device_apply]\np50 = 1.0\n")
    board = budgets.load_file(BOARDS_DIR / "unix.budget.toml").for_kind("mqtt")
    mine = budgets.for_board(boards.load("unix"), f).for_kind("mqtt")
    assert mine.total == {**board.total, "p99": 7.5} and mine.lost == 2
    assert mine.hops["device_apply"] == {**board.hops["device_apply"], "p50": 1.0}


@pytest.mark.parametrize(
    ("text", "msg"),
    [
        ("[journey.mqt]\np99 = 1\n", "[journey.mqt]: unknown journey 'mqt'"),
        ('[journey.mqtt]\np99 = "fast"\n', "[journey.mqtt] p99 = 'fast': not a number"),
        ("[journey.mqtt]\np99 = -1\n", "[journey.mqtt] p99 = -1: a limit must be a number >= 0"),
        ("[journey.mqtt]\nlost = 1.5\n", "[journey.mqtt] lost = 1.5: not a whole number"),
        ("[journey.mqtt]\np50 = true\n", "[journey.mqtt] p50 = True: not a number"),
        ("[journey.mqtt.hops.device_apply]\np99 = -0.5\n", "[journey.mqtt.hops.device_apply] p99 = -0.5"),
        ("[jorney.mqtt]\np99 = 1\n", "unknown key 'jorney'"),
    ],
)
def test_a_bad_budget_value_names_its_file_and_key(tmp_path: Path, text: str, msg: str) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ValueError) as e:
        budgets.load_file(f)
    assert msg in str(e.value) and "bad.toml" in str(e.value)
