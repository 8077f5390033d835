"""The report page: verdict first, the run's facts, a table per journey with its budget, the pictures."""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Any

from host_harness.core.budgets import Breach, JourneyBudget, Verdict
from host_harness.core.hops import LABELS
from host_harness.core.latency import Summary
from host_harness.core.results import JourneyRun

COLUMNS = ("p50", "p90", "p99", "p99.9", "max")

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:70em;color:#222;padding:0 1em}
h1{margin-bottom:.2em} h2{margin-top:1.6em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.6em 0}
td,th{border:1px solid #d0d0d0;padding:.25em .7em;text-align:right;vertical-align:top}
th{background:#f3f3f3} td:first-child,th:first-child{text-align:left}
table.facts td{text-align:left;font-size:.92em} table.facts td:first-child{font-weight:600;white-space:nowrap}
.pass{color:#1b6e1b;font-weight:700} .fail{color:#b00020;font-weight:700} .none{color:#888}
.banner{font-size:1.3em;padding:.5em .8em;border-radius:.3em;display:inline-block;margin:.4em 0}
.banner.pass{background:#e5f4e5} .banner.fail{background:#fbe4e8}
tr.total td{font-weight:600;border-top:2px solid #999}
img{max-width:100%;border:1px solid #eee;margin:.5em 0}
pre{background:#f6f6f6;padding:1em;overflow-x:auto;font-size:.85em}
code{font-size:.95em}
"""


def _num(x: float) -> str:
    return "–" if math.isnan(x) else f"{x:.3f}"


def _result(limits: dict[str, float], breaches: list[Breach]) -> str:
    if breaches:
        return "<span class='fail'>FAIL</span>"
    if limits:
        return "<span class='pass'>PASS</span>"
    return "<span class='none'>no budget</span>"


def _budget_cells(limits: dict[str, float], s: Summary, breaches: list[Breach]) -> str:
    lim = "<br>".join(f"{html.escape(m)} ≤ {v:g}" for m, v in limits.items()) or "<span class='none'>–</span>"
    got = "<br>".join(_num(s.get(m)) for m in limits) or "<span class='none'>–</span>"
    return f"<td>{lim}</td><td>{got}</td><td>{_result(limits, breaches)}</td>"


def journey_table(run: JourneyRun, jb: JourneyBudget, verdict: Verdict | None) -> str:
    breaches = verdict.breaches if verdict else []
    head = "".join(f"<th>{m}</th>" for m in COLUMNS)
    rows = []
    for h in run.hops_present():
        s = run.hop(h)
        mine = [b for b in breaches if b.scope == h]
        rows.append(
            f"<tr><td>{html.escape(LABELS[h])}</td>"
            + "".join(f"<td>{_num(s.get(m))}</td>" for m in COLUMNS)
            + _budget_cells(jb.hops.get(h, {}), s, mine)
            + "</tr>"
        )
    t = run.total()
    total_breaches = [b for b in breaches if b.scope == "total" and b.metric not in ("lost", "duplicated")]
    rows.append(
        "<tr class='total'><td>end-to-end</td>"
        + "".join(f"<td>{_num(t.get(m))}</td>" for m in COLUMNS)
        + _budget_cells(jb.total, t, total_breaches)
        + "</tr>"
    )
    for what, count, allowed in (("lost", len(run.lost), jb.lost), ("duplicated", len(run.duplicated), jb.duplicated)):
        mine = [b for b in breaches if b.metric == what]
        rows.append(
            f"<tr><td>{what} (journeys)</td><td colspan='{len(COLUMNS)}'></td>"
            f"<td>≤ {allowed}</td><td>{count}</td><td>{_result({what: allowed}, mine)}</td></tr>"
        )
    return (
        f"<table><tr><th>hop (ms)</th>{head}<th>budget</th><th>measured</th><th>result</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def _facts(meta: dict[str, Any]) -> str:
    rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>" for k, v in meta.items())
    return f"<table class='facts'>{rows}</table>"


def page(
    runs: list[JourneyRun],
    verdicts: list[Verdict],
    budgets: dict[str, JourneyBudget],
    meta: dict[str, Any],
    pictures: dict[str, Path],
) -> str:
    ok = all(v.ok for v in verdicts)
    by_kind = {v.kind: v for v in verdicts}
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>lightctl report</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>lightctl: light journey latency</h1>",
        f"<div class='banner {'pass' if ok else 'fail'}'>verdict: {'PASS' if ok else 'FAIL'}",
    ]
    for v in verdicts:
        parts.append(f" · {html.escape(v.kind)} {'PASS' if v.ok else 'FAIL'}")
    parts.append("</div>")
    for v in verdicts:
        if not v.ok:
            parts.append(f"<p class='fail'>{html.escape(v.kind)}: {html.escape('; '.join(map(str, v.breaches)))}</p>")
    parts += ["<h2>Run</h2>", _facts(meta)]
    for name, p in pictures.items():
        b64 = base64.b64encode(p.read_bytes()).decode()
        parts.append(f"<p><img alt='{html.escape(name)}' src='data:image/png;base64,{b64}'></p>")
    for r in runs:
        v = by_kind.get(r.kind)
        state = ""
        if v is not None:
            state = " — <span class='pass'>PASS</span>" if v.ok else " — <span class='fail'>FAIL</span>"
        parts.append(
            f"<h2>{html.escape(r.kind)} journey ({html.escape(r.schedule)}): {len(r.journeys)} confirmed, "
            f"{len(r.lost)} lost, {len(r.duplicated)} duplicated{state}</h2>"
        )
        parts.append(journey_table(r, budgets.get(r.kind, JourneyBudget()), v))
        if v is not None:
            text = html.escape(v.waterfall)
            parts.append(f"<details><summary>waterfall as text</summary><pre>{text}</pre></details>")
    parts.append("</body></html>")
    return "\n".join(parts)
