"""The report's pictures: latency by percentile, and the per-hop waterfall.

Percentiles go on the usual log(1/(1-p)) axis, and each journey's line stops
at the highest percentile its sample count supports, p(1 - 1/n): 200 samples
say nothing about p99.99. Latency is on a log axis, so the budget lines (often
far above the measured times) and the tail fit on one picture.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from host_harness.core.budgets import Budget, JourneyBudget
from host_harness.core.hops import LABELS
from host_harness.core.results import JourneyRun

STANDARD_PERCENTILES = (50.0, 90.0, 99.0, 99.9, 99.99, 99.999, 99.9999)
METRIC_PERCENTILE = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p99.9": 99.9}
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e")
HOP_COLORS = ("#9e9e9e", "#4c72b0", "#dd8452", "#8172b3", "#55a868", "#c44e52")
LIMIT_BOX = {"facecolor": "white", "edgecolor": "none", "alpha": 0.85, "pad": 1}  # readable over a dark bar


def supported_percentile(n: int) -> float:
    """The highest percentile n samples can show: p(1 - 1/n) (0 for fewer than two)."""
    return 100.0 * (1.0 - 1.0 / n) if n > 1 else 0.0


def x_of(q: float) -> float:
    """A percentile's place on the axis: 1/(1-p), so p90, p99, p99.9 are equally spaced."""
    return 1.0 / (1.0 - q / 100.0)


def percentile_ticks(n: int) -> list[float]:
    """p0, the standard percentiles n samples support, and the last supported one."""
    top = supported_percentile(n)
    ticks = [0.0] + [q for q in STANDARD_PERCENTILES if q <= top * (1 + 1e-12)]
    if top > 0 and x_of(top) / x_of(ticks[-1]) >= 1.5:  # not crowding the previous label
        ticks.append(top)
    return ticks


def tick_label(q: float) -> str:
    return "p0" if q == 0 else f"p{q:.5g}"


def percentile_curve(values_ms: list[float]) -> tuple[list[float], list[float]]:
    """(x, latency) of the nearest-rank percentiles k/n for k = 1 .. n-1, as HdrHistogram reads them."""
    v = sorted(values_ms)
    n = len(v)
    if n < 2:
        return [1.0] * n, v
    xs = [x_of(100.0 * k / n) for k in range(1, n)]
    return xs, v[: n - 1]


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _budget_lines(ax: Any, limits: dict[tuple[str, float], list[tuple[str, str]]], x_right: float) -> None:
    """One dashed line per (metric, limit); journeys sharing it share the line and its label."""
    for (m, lim), kinds in limits.items():
        color = kinds[0][1] if len(kinds) == 1 else "#555555"
        q = METRIC_PERCENTILE.get(m)
        x = x_right if q is None else min(x_of(q), x_right)
        ax.axhline(lim, color=color, ls="--", lw=1, alpha=0.55)
        ax.plot([x], [lim], marker="v", color=color, ms=7, ls="none")
        ax.annotate(
            f"{', '.join(k for k, _ in kinds)} budget: {m} ≤ {lim:g} ms",
            (1.0, lim),
            xycoords=("axes fraction", "data"),
            xytext=(-4, 3),
            textcoords="offset points",
            ha="right",
            va="bottom",
            fontsize=8,
            color=color,
        )


def plot_percentiles(path: Path, runs: list[JourneyRun], budget: Budget | None = None) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(11, 5.5))
    runs = [r for r in runs if r.journeys]
    n_max = max((len(r.journeys) for r in runs), default=2)
    x_right = x_of(supported_percentile(max(2, n_max)))
    limits: dict[tuple[str, float], list[tuple[str, str]]] = {}
    for i, r in enumerate(runs):
        color = COLORS[i % len(COLORS)]
        values = [j.e2e_ms for j in r.journeys]
        xs, ys = percentile_curve(values)
        n = len(values)
        label = f"{r.kind} ({r.schedule}), n={n}: up to {tick_label(supported_percentile(n))}, max {max(values):.3f} ms"
        # nearest rank: the value at k/n holds for the percentiles from (k-1)/n up to k/n
        ax.plot(xs, ys, color=color, lw=1.8, label=label, drawstyle="steps-pre")
        if xs:
            ax.plot([xs[-1]], [ys[-1]], marker="o", color=color, ms=5)
        if budget is not None:
            for m, lim in budget.for_kind(r.kind).total.items():
                limits.setdefault((m, lim), []).append((r.kind, color))
    _budget_lines(ax, limits, x_right)
    ticks = percentile_ticks(max(2, n_max))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(1.0, x_right * 1.15)
    ax.set_xticks([x_of(q) for q in ticks])
    ax.set_xticklabels([tick_label(q) for q in ticks])
    ax.minorticks_off()
    ax.xaxis.set_minor_locator(plt.NullLocator())
    _log_ms_axis(ax, plt)
    ax.set_ylabel("end-to-end latency (ms, log scale)")
    ax.set_xlabel("percentile (each line stops where its sample count does: p(1 - 1/n))")
    ax.set_title("Light journey latency by percentile, with the budget (dashed, ▼ where it is checked)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")  # the upper left holds the slow start of a slow journey
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _log_ms_axis(ax: Any, plt: Any) -> None:
    """Plain numbers (0.1, 1, 10 ms) on a log axis, not 10^-1."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_minor_locator(plt.NullLocator())
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))


def plot_waterfall(path: Path, runs: list[JourneyRun], budget: Budget | None = None) -> Path:
    """Per journey kind: each hop's p50 as a bar starting where the previous hop's ends, a whisker to its p99."""
    plt = _plt()
    runs = [r for r in runs if r.journeys]
    heights = [len(r.hops_present()) + 1 for r in runs] or [1]
    fig, axes = plt.subplots(
        len(heights),
        1,
        figsize=(11, 1.3 + 0.42 * sum(heights) + 0.5 * len(heights)),
        squeeze=False,
        gridspec_kw={"height_ratios": heights},
    )
    for ax, r in zip(axes[:, 0], runs, strict=False):
        _waterfall_panel(ax, r, budget.for_kind(r.kind) if budget else JourneyBudget())
    axes[-1, 0].set_xlabel("ms: bar = hop's p50, starting where the previous hop's p50 ends; whisker = hop's p99")
    fig.suptitle("Where the time goes: p50 and p99 per hop (means hide the tail)")
    fig.tight_layout(rect=(0, 0, 0.88, 1))  # the right margin holds each row's figures
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _waterfall_panel(ax: Any, r: JourneyRun, jb: JourneyBudget) -> None:
    hops = r.hops_present()
    rows = [LABELS[h] for h in hops] + ["end-to-end"]
    t = r.total()
    extent = max(t.p99, sum(r.hop(h).p50 for h in hops) + max((r.hop(h).p99 for h in hops), default=0.0))
    # a limit far beyond the bars would squash them: the table and the percentile plot show it
    shown = 3 * extent
    left = 0.0
    right_edge = 0.0
    for y, h in enumerate(hops):
        s = r.hop(h)
        color = HOP_COLORS[y % len(HOP_COLORS)]
        ax.barh(y, s.p50, left=left, color=color, height=0.6)
        ax.errorbar(left + s.p99, y, xerr=[[s.p99 - s.p50], [0]], fmt="none", ecolor="#333333", capsize=4, lw=1)
        for m, lim in jb.hops.get(h, {}).items():
            if left + lim > shown:
                continue
            right_edge = max(right_edge, left + lim)
            _limit_mark(ax, left + lim, y, f"{m} ≤ {lim:g}")
        _figures(ax, y, s.p50, s.p99)
        right_edge = max(right_edge, left + s.p99)
        left += s.p50
    y = len(hops)
    ax.barh(y, t.p50, color="#333333", height=0.6)
    ax.errorbar(t.p99, y, xerr=[[t.p99 - t.p50], [0]], fmt="none", ecolor="#333333", capsize=4, lw=1)
    _figures(ax, y, t.p50, t.p99, weight="bold")
    right_edge = max(right_edge, t.p99)
    for m, lim in jb.total.items():
        if lim <= shown:
            _limit_mark(ax, lim, y, f"{m} ≤ {lim:g}")
            right_edge = max(right_edge, lim)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(rows, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, right_edge * 1.08 if right_edge > 0 and math.isfinite(right_edge) else 1)
    ax.set_title(f"{r.kind} journey ({r.schedule}, n={len(r.journeys)})", fontsize=10, loc="left")
    ax.grid(True, axis="x", alpha=0.3)


def _limit_mark(ax: Any, x: float, y: int, label: str) -> None:
    """A budget limit: a red tick at x on row y, labelled left of it."""
    ax.plot([x], [y], marker="|", color="#b00020", ms=16, mew=2)
    ax.annotate(
        label,
        (x, y),
        xytext=(-3, 6),
        ha="right",
        textcoords="offset points",
        fontsize=7,
        color="#b00020",
        bbox=LIMIT_BOX,
    )


def _figures(ax: Any, y: int, p50: float, p99: float, weight: str = "normal") -> None:
    """A row's p50 / p99 in the right margin, where no bar, whisker or limit can cover it."""
    ax.annotate(
        f"p50 {p50:.3f}  p99 {p99:.3f} ms",
        (1.01, y),
        xycoords=("axes fraction", "data"),
        va="center",
        fontsize=8,
        weight=weight,
        annotation_clip=False,
    )
