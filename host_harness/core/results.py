"""A run of one journey kind: its journeys, hops, losses and summaries."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from host_harness.core import latency
from host_harness.core.hops import HOPS, UNTAPPED_HOPS, ClockMap, HopTimes, hop_ms, split
from host_harness.core.journey import Journey


@dataclass
class JourneyRun:
    kind: str  # "mqtt", "serial", "button"
    schedule: str = "closed"  # "closed" or "open@<rate>/s"
    journeys: list[Journey] = field(default_factory=list)
    hop_times: list[HopTimes] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)  # ids never confirmed
    duplicated: list[str] = field(default_factory=list)  # ids confirmed more than once
    errors: list[str] = field(default_factory=list)
    sender: str = ""  # open loop: how the sender kept its schedule (pace.Pacer.describe)

    def add(self, j: Journey, clock: ClockMap) -> None:
        # Split before either list grows: a Ctrl-C between the two must not
        # leave a journey without its hops (the interrupted run still reports).
        ht = split(j, clock)
        self.hop_times.append(ht)
        self.journeys.append(j)

    def hops_present(self) -> list[str]:
        """Hops with any time in them (host_queue only in open loop, device_sense with a sense input)."""
        out = []
        for h in HOPS:
            if self.hop_times and not any(h in ht.hops for ht in self.hop_times):
                continue  # e.g. host_to_device of a tapped run, split at the brokers
            if not self.hop_times and h not in UNTAPPED_HOPS:
                continue
            if h in ("host_queue", "device_sense") and all(ht.hops.get(h, 0) == 0 for ht in self.hop_times):
                continue
            out.append(h)
        return out

    def total(self) -> latency.Summary:
        return latency.summarize(j.e2e_ms for j in self.journeys)

    def hop(self, name: str) -> latency.Summary:
        """A hop over the journeys that have it (a journey a tap missed has its hops unsplit)."""
        return latency.summarize(max(0.0, x) for x in self.hop_samples(name))

    def hop_samples(self, name: str) -> list[float]:
        """The hop's time in each journey that has it (host_to_device of a tapped journey: its parts' sum)."""
        return [x for x in (hop_ms(ht.hops, name) for ht in self.hop_times) if x is not None]

    def hop_mean(self, name: str) -> float:
        xs = self.hop_samples(name)
        return sum(xs) / len(xs) if xs else float("nan")

    def sent(self) -> int:
        return len(self.journeys) + len(self.lost)

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "schedule": self.schedule,
            "sent": self.sent(),
            "confirmed": len(self.journeys),
            "lost": self.lost,
            "duplicated": self.duplicated,
            "errors": self.errors,
            "total_ms": self.total().as_dict(),
            "hops_ms": {h: self.hop(h).as_dict() for h in self.hops_present()},
            "samples": [dict(ht.journey.as_dict(), hops_ms=ht.hops) for ht in self.hop_times],
        }
