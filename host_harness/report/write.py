"""Reports of a run: JSON of every sample, HdrHistogram logs, pictures, HTML.

DIR/journeys.json            every journey: host ns, device ticks, hops; the run's facts
DIR/<kind>.hlog              HdrHistogram interval log (µs; Interval_Max in ms), see report.hlog
DIR/latency-percentiles.png  latency by percentile, one line per journey kind, with the budget
DIR/waterfall.png            p50 and p99 per hop, per journey kind
DIR/index.html               all of it on one page, pictures inline: opens offline
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from host_harness.core.budgets import Budget, Verdict
from host_harness.core.results import JourneyRun
from host_harness.report import html
from host_harness.report.hlog import write_hlog


def write(
    out_dir: str | Path,
    runs: list[JourneyRun],
    verdicts: list[Verdict],
    meta: dict[str, Any],
    budget: Budget | None = None,
) -> Path:
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    data = {
        "meta": meta,
        "verdicts": [{"kind": v.kind, "ok": v.ok, "breaches": [str(b) for b in v.breaches]} for v in verdicts],
        "runs": [r.as_dict() for r in runs],
    }
    (d / "journeys.json").write_text(json.dumps(data, indent=1))
    for r in runs:
        write_hlog(d / f"{r.kind}.hlog", r)
    pictures = {}
    try:
        from host_harness.report import plots

        pictures["latency-percentiles.png"] = plots.plot_percentiles(d / "latency-percentiles.png", runs, budget)
        pictures["waterfall.png"] = plots.plot_waterfall(d / "waterfall.png", runs, budget)
    except ImportError:
        pass  # matplotlib missing: JSON, logs and the HTML tables still written
    kinds = {r.kind: (budget.for_kind(r.kind) if budget else None) for r in runs}
    budgets = {k: jb for k, jb in kinds.items() if jb is not None}
    (d / "index.html").write_text(html.page(runs, verdicts, budgets, meta, pictures))
    return d
