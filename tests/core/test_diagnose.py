"""The culprit diagnosis on synthetic delay shapes (pure; see test_links for real ones)."""

from __future__ import annotations

import random

from host_harness.core.budgets import JourneyBudget, evaluate
from host_harness.core.diagnose import (
    BATCHED,
    BEACON,
    BEACON_MS,
    DELAYED_ACK_MS,
    FIXES,
    NAGLE,
    POLLING,
    RETRANSMISSION,
    RTO_MIN_MS,
    SECOND_MS,
    batching,
    diagnose,
    explain,
)
from host_harness.core.hops import UNTAPPED_HOPS, HopTimes
from host_harness.core.journey import Journey
from host_harness.core.results import JourneyRun


def base(n: int, rng: random.Random, ms: float = 1.0) -> list[float]:
    return [ms * (0.8 + 0.4 * rng.random()) for _ in range(n)]


def culprits(xs: list[float]) -> list[str]:
    return [d.culprit for d in diagnose(xs)]


def test_plain_fast_samples_have_no_culprit() -> None:
    assert culprits(base(500, random.Random(1))) == []


def test_a_spread_of_wifi_jitter_is_not_called_a_step() -> None:
    rng = random.Random(2)
    # A continuous spread from 3 to 70 ms (a Wi-Fi link's ordinary delays): no valley, no step.
    xs = [3 + 67 * rng.random() ** 3 for _ in range(1000)]
    assert culprits(xs) == []


def test_a_minority_40ms_step_is_nagle_meeting_delayed_ack() -> None:
    rng = random.Random(3)
    xs = base(400, rng) + [DELAYED_ACK_MS + 1 + rng.random() * 3 for _ in range(40)]
    ds = diagnose(xs)
    assert [d.culprit for d in ds] == [NAGLE]
    assert "TCP_NODELAY" in ds[0].fix


def test_every_sample_stalled_40ms_is_nagle_too() -> None:
    rng = random.Random(4)
    xs = [DELAYED_ACK_MS + 0.5 + rng.random() * 2 for _ in range(200)]
    assert culprits(xs) == [NAGLE]


def test_200ms_steps_and_a_backoff_are_retransmissions() -> None:
    rng = random.Random(5)
    xs = base(450, rng, 2.0) + [RTO_MIN_MS + 5 + 20 * rng.random() for _ in range(40)]
    xs += [3 * RTO_MIN_MS + 10 for _ in range(5)]  # 200 + 400 after a second loss
    assert culprits(xs) == [RETRANSMISSION]


def test_delays_just_below_beacon_multiples_are_power_save() -> None:
    rng = random.Random(6)
    xs = [3 * BEACON_MS - 2 - 15 * rng.random() for _ in range(100)]
    ds = diagnose(xs)
    assert [d.culprit for d in ds] == [BEACON]
    assert "PM_NONE" in ds[0].fix


def test_a_flat_spread_up_to_a_wakeup_interval_is_power_save() -> None:
    rng = random.Random(7)
    xs = [5 + 3 * BEACON_MS * rng.random() for _ in range(400)]
    assert culprits(xs) == [BEACON]


def test_whole_second_steps_are_polling() -> None:
    rng = random.Random(8)
    xs = base(300, rng) + [SECOND_MS + 30 * rng.random() for _ in range(20)] + [2 * SECOND_MS + 5] * 3
    assert culprits(xs) == [POLLING]
    xs = [SECOND_MS * (1 + i % 3) + 20 * rng.random() for i in range(60)]
    assert culprits(xs) == [POLLING]


def test_too_few_samples_say_nothing() -> None:
    assert diagnose([40.0, 41.0, 1.0]) == []


def _run_of(e2e_ms: list[float]) -> JourneyRun:
    run = JourneyRun("mqtt")
    for i, ms in enumerate(e2e_ms):
        ns = int(ms * 1e6)
        j = Journey("mqtt", f"c{i}", i, "ON", 255, "mqtt", 0, ns, 0, 0, 0, 2**30)
        run.journeys.append(j)
        run.hop_times.append(HopTimes(j, {h: (ms if h == "host_to_device" else 0.0) for h in UNTAPPED_HOPS}))
    return run


def test_a_broken_verdict_names_the_culprit_and_its_fix() -> None:
    rng = random.Random(9)
    xs = base(180, rng) + [RTO_MIN_MS + 10 * rng.random() for _ in range(20)]
    run = _run_of(xs)
    v = evaluate(run, JourneyBudget(total={"p99": 50.0}))
    assert not v.ok
    assert any("end-to-end" in line and "retransmission" in line for line in v.diagnosis)
    assert FIXES[RETRANSMISSION] in v.message()
    kept = evaluate(run, JourneyBudget(total={"p99": 5000.0}))
    assert kept.ok and kept.diagnosis == [] and "diagnosis" not in kept.message()


def test_explain_gives_one_line_per_culprit() -> None:
    rng = random.Random(10)
    xs = base(300, rng) + [DELAYED_ACK_MS + 2] * 20 + [RTO_MIN_MS + 8] * 20
    lines = explain(xs)
    assert len(lines) == 2 and all("fix:" in line for line in lines)


def test_two_stalls_per_journey_are_nagle_not_a_beacon() -> None:
    rng = random.Random(11)
    xs = [43.0] + [2 * DELAYED_ACK_MS + 3 + 3 * rng.random() for _ in range(40)]
    assert culprits(xs) == [NAGLE]


def test_commands_sharing_segments_are_the_broker_batching_them() -> None:
    assert batching(300, 300, 1) is None  # each on its own
    assert batching(1, 1, 1) is None
    assert batching(0, 0, 0) is None
    d = batching(300, 186, 5)
    assert d is not None and d.culprit == BATCHED
    assert "300 commands crossed the link in 186 TCP segments (up to 5 in one)" in d.evidence
    assert "114 of 300 (38 %)" in d.evidence
    assert "set_tcp_nodelay true" in d.line()
