"""Latency recording in HdrHistogram (µs resolution, 3 significant digits)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from hdrh.histogram import HdrHistogram

LOWEST_US = 1
HIGHEST_US = 3_600_000_000  # one hour
DIGITS = 3

PERCENTILES: tuple[tuple[str, float], ...] = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99.9", 99.9))


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, DIGITS)


def record_ms(h: HdrHistogram, ms: float) -> None:
    """Record a duration in ms (clamped into the histogram's range)."""
    us = round(ms * 1000.0)
    h.record_value(min(max(us, LOWEST_US), HIGHEST_US))


@dataclass
class Summary:
    count: int
    p50: float
    p90: float
    p99: float
    p999: float
    max: float
    mean: float

    def get(self, name: str) -> float:
        return self.as_dict()[name]

    def as_dict(self) -> dict[str, float]:
        return {
            "count": self.count,
            "p50": self.p50,
            "p90": self.p90,
            "p99": self.p99,
            "p99.9": self.p999,
            "max": self.max,
            "mean": self.mean,
        }


def summarize(values_ms: Iterable[float]) -> Summary:
    h = new_histogram()
    for v in values_ms:
        record_ms(h, v)
    return summary_of(h)


def summary_of(h: HdrHistogram) -> Summary:
    n = h.get_total_count()
    if n == 0:
        nan = float("nan")
        return Summary(0, nan, nan, nan, nan, nan, nan)

    def p(q: float) -> float:
        return h.get_value_at_percentile(q) / 1000.0

    return Summary(n, p(50), p(90), p(99), p(99.9), h.get_max_value() / 1000.0, h.get_mean_value() / 1000.0)
