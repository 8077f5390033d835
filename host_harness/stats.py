"""Percentiles and summaries of latency samples."""

from __future__ import annotations

import math
from collections.abc import Sequence

PERCENTILES = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0))


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (never interpolates below an observed value)."""
    if not values:
        return math.nan
    s = sorted(values)
    k = max(0, math.ceil(p / 100.0 * len(s)) - 1)
    return s[min(k, len(s) - 1)]


def summary(values: Sequence[float]) -> dict[str, float]:
    out = {name: percentile(values, p) for name, p in PERCENTILES}
    out["max"] = max(values) if values else math.nan
    out["min"] = min(values) if values else math.nan
    out["mean"] = sum(values) / len(values) if values else math.nan
    return out
