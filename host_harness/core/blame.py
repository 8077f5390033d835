"""Which hop accounts for a broken end-to-end percentile.

Each hop's own percentile says nothing about the slow journeys: the p99 of
the end-to-end time is made of whichever hops were slow in *those* journeys.
So the tail is taken from the end-to-end ranking (the journeys at or above
the broken percentile) and each hop's mean time over just those journeys is
compared: the hop with the largest share of that tail is blamed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from host_harness.core.hops import HopTimes
from host_harness.core.results import JourneyRun

# The end-to-end metrics a tail can be taken for, as percentiles.
PERCENTILE_OF = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p99.9": 99.9, "max": 100.0}


@dataclass
class Blame:
    metric: str  # the broken end-to-end metric (p50, p90, p99, p99.9, max)
    hop: str  # the hop with the largest share of that tail
    tail: int  # journeys in the tail
    hop_ms: float  # the hop's mean time over the tail
    tail_ms: float  # the mean end-to-end time over the tail

    @property
    def share(self) -> float:
        return self.hop_ms / self.tail_ms * 100.0 if self.tail_ms > 0 else float("nan")

    def __str__(self) -> str:
        which = "slowest journey" if self.tail == 1 else f"{self.tail} slowest journeys"
        return (
            f"end-to-end {self.metric} is {self.hop}'s: {self.hop_ms:.3f} of {self.tail_ms:.3f} ms "
            f"({self.share:.0f}%) in the {which}"
        )


def tail(run: JourneyRun, metric: str) -> list[HopTimes]:
    """The journeys at or above the end-to-end ``metric``: for p99 of 200, the 3 from the 198th up."""
    q = PERCENTILE_OF[metric]
    ranked = sorted(run.hop_times, key=lambda ht: ht.journey.e2e_ms)
    if not ranked:
        return []
    k = max(1, math.ceil(round(q / 100.0 * len(ranked), 9)))  # 1-based rank of the percentile's journey
    return ranked[k - 1 :]


def blame(run: JourneyRun, metric: str) -> Blame | None:
    """The hop that accounts for the end-to-end ``metric``, from the journeys in its tail."""
    if metric not in PERCENTILE_OF:
        return None
    slow = tail(run, metric)
    hops = run.hops_present()
    if not slow or not hops:
        return None

    def mean(h: str) -> float:
        return sum(max(0.0, ht.hops.get(h, 0.0)) for ht in slow) / len(slow)

    worst = max(hops, key=mean)
    total = sum(ht.journey.e2e_ms for ht in slow) / len(slow)
    return Blame(metric, worst, len(slow), mean(worst), total)
