"""A run's JSON samples: each journey with its own hops, whatever order the hops were kept in."""

from __future__ import annotations

from host_harness.core.hops import HopTimes
from host_harness.core.journey import Journey
from host_harness.core.results import JourneyRun


def _journey(i: int, e2e_ns: int) -> Journey:
    return Journey("mqtt", f"c{i}", i + 1, "ON", 255, "mqtt", 10 * i, 10 * i + e2e_ns, 0, 0, 0, 2**30)


def test_samples_pair_each_journey_with_its_own_hops_after_the_hops_are_sorted() -> None:
    run = JourneyRun("mqtt", "open@100/s")
    for i, ms in enumerate((3.0, 1.0, 2.0)):
        j = _journey(i, int(ms * 1e6))
        run.journeys.append(j)
        run.hop_times.append(HopTimes(j, {"host_to_device": ms}))
    run.hop_times.sort(key=lambda ht: ht.hops["host_to_device"])  # kept in another order than the journeys
    samples = run.as_dict()["samples"]
    assert {s["id"]: s["hops_ms"]["host_to_device"] for s in samples} == {"c0": 3.0, "c1": 1.0, "c2": 2.0}


def test_a_journey_whose_hops_were_not_yet_kept_does_not_break_the_report() -> None:
    # A Ctrl-C can land between the two lists growing; the interrupted run still reports.
    run = JourneyRun("mqtt")
    j = _journey(0, 1_000_000)
    run.journeys.append(j)
    run.hop_times.append(HopTimes(j, {"host_to_device": 1.0}))
    run.journeys.append(_journey(1, 2_000_000))
    d = run.as_dict()
    assert [s["id"] for s in d["samples"]] == ["c0"]
