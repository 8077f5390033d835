"""What the taps cost: journeys with the taps subscribed against journeys without, in one run.

Blocks of closed-loop MQTT journeys alternate: taps subscribed (these are the
run's journeys, split at the brokers) and taps unsubscribed (the broker sends
them nothing; these only give the baseline). The cost is the difference of
the two end-to-end medians; beside it, each tap's delivery floor.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from host_harness.core.hops import ClockMap
from host_harness.core.results import JourneyRun
from host_harness.measure.journeys import Journeys
from host_harness.measure.load import closed_loop
from host_harness.measure.progress import Progress
from host_harness.measure.taps import TapFloor, Taps, describe_floor

BLOCK = 20  # journeys per block: a multiple of 4, so each block runs the same command mix


@dataclass
class TapCost:
    with_ms: list[float]  # end-to-end of the journeys with the taps subscribed
    without_ms: list[float]  # and without
    floors: list[TapFloor]
    missed: int = 0  # tap times not seen

    @property
    def delta_p50(self) -> float:
        if not self.with_ms or not self.without_ms:
            return float("nan")
        return statistics.median(self.with_ms) - statistics.median(self.without_ms)

    def describe(self) -> str:
        if not self.without_ms:
            ab = "not measured (open loop or no MQTT journeys)"
        else:
            ab = (
                f"end-to-end p50 {statistics.median(self.with_ms):.3f} ms with taps ({len(self.with_ms)}), "
                f"{statistics.median(self.without_ms):.3f} ms without ({len(self.without_ms)}): "
                f"{self.delta_p50:+.3f} ms"
            )
        missed = f"; {self.missed} tap times missed (those journeys unsplit)" if self.missed else ""
        return f"cost {ab}; tap delivery (the split's uncertainty) {describe_floor(self.floors)}{missed}"


def alternate(
    js: Journeys,
    taps: Taps,
    count: int,
    clock: ClockMap,
    *,
    seed: int = 1,
    progress: Progress | None = None,
    into: JourneyRun | None = None,
) -> JourneyRun:
    """``count`` tapped MQTT journeys into ``into``, with as many untapped ones in alternate blocks
    between them; returns the untapped run (the baseline)."""
    run = into if into is not None else JourneyRun("mqtt", "closed")
    baseline = JourneyRun("mqtt", "closed, taps unsubscribed")
    done = 0
    for block in range(0, 2 * ((count + BLOCK - 1) // BLOCK)):
        tapped = block % 2 == 0
        n = min(BLOCK, count - done) if tapped else BLOCK
        if n <= 0:
            break
        if tapped:
            taps.on(js.device.base)
            closed_loop(js, "mqtt", n, clock, seed=seed + block, progress=progress, into=run)
            done += n
        else:
            taps.off()
            closed_loop(js, "mqtt", n, clock, seed=seed + block, into=baseline)
    taps.on(js.device.base)
    return baseline
