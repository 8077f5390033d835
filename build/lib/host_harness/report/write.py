"""Reports of a run: JSON of every sample, HdrHistogram logs, pictures, HTML.

DIR/journeys.json            every journey: host ns, device ticks, hops
DIR/<kind>.hlog              HdrHistogram interval log (µs), e.g. for HistogramLogAnalyzer
DIR/latency-percentiles.png  latency by percentile, one line per journey kind
DIR/waterfall.png            mean time per hop, per journey kind
DIR/index.html               all of it on one page, pictures inline: opens offline
"""

from __future__ import annotations

import base64
import html
import json
import math
import time
from pathlib import Path
from typing import Any

from host_harness.core import latency
from host_harness.core.budgets import Verdict
from host_harness.core.hops import LABELS
from host_harness.core.results import JourneyRun


def write(out_dir: str | Path, runs: list[JourneyRun], verdicts: list[Verdict], meta: dict[str, Any]) -> Path:
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
        pictures["latency-percentiles.png"] = plot_percentiles(d / "latency-percentiles.png", runs)
        pictures["waterfall.png"] = plot_waterfall(d / "waterfall.png", runs)
    except ImportError:
        pass  # matplotlib missing: JSON, logs and the HTML tables still written
    (d / "index.html").write_text(html_page(runs, verdicts, meta, pictures))
    return d


def write_hlog(path: Path, run: JourneyRun) -> None:
    """One interval covering the run, values in µs (max column in ms)."""
    from hdrh.log import HistogramLogWriter

    h = latency.new_histogram()
    for j in run.journeys:
        latency.record_ms(h, j.e2e_ms)
    span_s = 0.0
    if run.journeys:
        span_s = max(0.001, (run.journeys[-1].t_confirm_ns - run.journeys[0].t_send_ns) / 1e9)
    h.set_start_time_stamp(0)
    h.set_end_time_stamp(int(span_s * 1000))
    now = time.time()
    with path.open("w") as f:
        w = HistogramLogWriter(f)
        w.output_comment(f"lightctl {run.kind} journey, schedule {run.schedule}, values in microseconds")
        # (hdrh's own output_start_time is broken in 0.10.x: write the line here)
        f.write(f"#[StartTime: {now:.3f} (seconds since epoch), {time.strftime('%Y-%m-%d %H:%M:%S')}]\n")
        w.output_legend()
        w.output_interval_histogram(h, end_time_stamp_sec=span_s, max_value_unit_ratio=1000.0)


def plot_percentiles(path: Path, runs: list[JourneyRun]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    qs = [50, 75, 90, 95, 99, 99.5, 99.9, 99.99]
    for r in runs:
        if not r.journeys:
            continue
        h = latency.new_histogram()
        for j in r.journeys:
            latency.record_ms(h, j.e2e_ms)
        xs = [1.0 / (1.0 - q / 100.0) for q in qs]
        ys = [h.get_value_at_percentile(q) / 1000.0 for q in qs]
        ax.plot(xs, ys, marker="o", label=f"{r.kind} ({r.schedule}, n={len(r.journeys)})")
    ax.set_xscale("log")
    ax.set_xticks([1.0 / (1.0 - q / 100.0) for q in qs])
    ax.set_xticklabels([f"p{q:g}" for q in qs])
    ax.set_ylabel("end-to-end latency (ms)")
    ax.set_title("Light journey latency by percentile")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_waterfall(path: Path, runs: list[JourneyRun]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in runs if r.journeys]
    fig, ax = plt.subplots(figsize=(9, 2.2 + 1.1 * max(1, len(runs))))
    colors = ["#999999", "#4c72b0", "#dd8452", "#55a868", "#c44e52"]
    for y, r in enumerate(runs):
        left = 0.0
        for n, h in enumerate(r.hops_present()):
            w = max(0.0, r.hop_mean(h))
            ax.barh(
                y, w, left=left, color=colors[n % len(colors)], edgecolor="white", label=LABELS[h] if y == 0 else None
            )
            left += w
        ax.text(left, y, f"  {left:.3f} ms", va="center", fontsize=8)
    ax.set_yticks(range(len(runs)))
    ax.set_yticklabels([f"{r.kind}\n{r.schedule}" for r in runs])
    ax.invert_yaxis()
    ax.set_xlabel("mean time per hop (ms), hops in journey order")
    ax.set_title("Where the time goes")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _table(run: JourneyRun) -> str:
    rows = []
    for h in run.hops_present():
        s = run.hop(h)
        rows.append((LABELS[h], s))
    rows.append(("end-to-end", run.total()))
    cells = "".join(
        f"<tr><td>{html.escape(n)}</td>"
        + "".join(f"<td>{_num(s.get(m))}</td>" for m in ("p50", "p90", "p99", "p99.9", "max"))
        + "</tr>"
        for n, s in rows
    )
    return (
        "<table><tr><th>hop (ms)</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>max</th></tr>"
        f"{cells}</table>"
    )


def _num(x: float) -> str:
    return "–" if math.isnan(x) else f"{x:.3f}"


def html_page(runs: list[JourneyRun], verdicts: list[Verdict], meta: dict[str, Any], pictures: dict[str, Path]) -> str:
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>lightctl report</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:60em}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:.2em .6em;text-align:right}td:first-child{text-align:left}"
        ".ok{color:#2a7d2a}.bad{color:#b00020;font-weight:bold}pre{background:#f6f6f6;padding:1em}</style></head><body>",
        "<h1>lightctl: light journey latency</h1>",
        "<p>" + html.escape(", ".join(f"{k}: {v}" for k, v in meta.items())) + "</p>",
    ]
    for v in verdicts:
        cls = "ok" if v.ok else "bad"
        text = "budget kept" if v.ok else "budget BROKEN: " + "; ".join(map(str, v.breaches))
        parts.append(f"<p class='{cls}'>{html.escape(v.kind)} journey: {html.escape(text)}</p>")
    for name, p in pictures.items():
        b64 = base64.b64encode(p.read_bytes()).decode()
        parts.append(f"<p><img alt='{html.escape(name)}' src='data:image/png;base64,{b64}'></p>")
    for r in runs:
        parts.append(
            f"<h2>{html.escape(r.kind)} journey ({html.escape(r.schedule)}): {len(r.journeys)} confirmed, "
            f"{len(r.lost)} lost, {len(r.duplicated)} duplicated</h2>"
        )
        parts.append(_table(r))
    for v in verdicts:
        parts.append(f"<h3>{html.escape(v.kind)} waterfall</h3><pre>{html.escape(v.waterfall)}</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)
