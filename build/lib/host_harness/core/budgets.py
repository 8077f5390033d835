"""Latency budgets (TOML) per board and journey, and verdicts that explain.

A budget file::

    [journey.mqtt]            # the whole journey
    p50 = 10.0                # ms; any of p50, p90, p99, "p99.9", max
    p99 = 50.0
    lost = 0                  # journeys never confirmed
    duplicated = 0            # confirmations seen twice

    [journey.mqtt.hops.device_apply]   # optional, per hop
    p99 = 5.0

Defaults ship in boards/ (named by the board's "budget" key); a user's file
given with --budget overrides them, journey by journey.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from host_harness.core.hops import CONTAINS, LABELS
from host_harness.core.results import JourneyRun
from host_harness.core.table import render
from host_harness.paths import BOARDS_DIR, ROOT

METRICS = ("p50", "p90", "p99", "p99.9", "max")


@dataclass
class JourneyBudget:
    total: dict[str, float] = field(default_factory=dict)
    hops: dict[str, dict[str, float]] = field(default_factory=dict)
    lost: int = 0
    duplicated: int = 0


@dataclass
class Budget:
    source: str
    journeys: dict[str, JourneyBudget] = field(default_factory=dict)

    def for_kind(self, kind: str) -> JourneyBudget:
        return self.journeys.get(kind, JourneyBudget())


def _parse(data: dict[str, Any], source: str) -> Budget:
    b = Budget(source)
    for kind, spec in (data.get("journey") or {}).items():
        if not isinstance(spec, dict):
            raise ValueError(f"{source}: [journey.{kind}] must be a table")
        jb = JourneyBudget()
        for k, v in spec.items():
            if k in METRICS:
                jb.total[k] = float(v)
            elif k == "lost":
                jb.lost = int(v)
            elif k == "duplicated":
                jb.duplicated = int(v)
            elif k == "hops":
                for hop, limits in v.items():
                    if hop not in LABELS:
                        raise ValueError(f"{source}: unknown hop {hop!r}; hops are {', '.join(LABELS)}")
                    bad = [m for m in limits if m not in METRICS]
                    if bad:
                        raise ValueError(f"{source}: unknown metric {bad[0]!r} for hop {hop}")
                    jb.hops[hop] = {m: float(x) for m, x in limits.items()}
            else:
                raise ValueError(f"{source}: unknown key {k!r} in [journey.{kind}]")
        b.journeys[kind] = jb
    return b


def _shown(p: Path) -> str:
    try:
        return str(p.resolve().relative_to(ROOT))
    except ValueError:
        return str(p)


def load_file(path: str | Path) -> Budget:
    p = Path(path)
    try:
        with p.open("rb") as f:
            return _parse(tomllib.load(f), _shown(p))
    except FileNotFoundError:
        raise ValueError(f"budget file {p} not found") from None
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"budget file {p}: {e}") from None


def for_board(board: dict[str, Any], override: str | Path | None = None) -> Budget:
    """The board's default budget, journey by journey overridden by a user's file."""
    name = board.get("budget")
    base = load_file(BOARDS_DIR / name) if name else Budget("(none)")
    if override is None:
        return base
    user = load_file(override)
    merged = dict(base.journeys)
    merged.update(user.journeys)
    return Budget(f"{user.source} over {base.source}", merged)


@dataclass
class Breach:
    scope: str  # "total" or a hop name
    metric: str
    limit: float
    measured: float

    def __str__(self) -> str:
        where = "end-to-end" if self.scope == "total" else f"hop {self.scope}"
        unit = "" if self.metric in ("lost", "duplicated") else " ms"
        return f"{where} {self.metric} {self.measured:g}{unit} > {self.limit:g}{unit}"


@dataclass
class Verdict:
    kind: str
    breaches: list[Breach]
    waterfall: str

    @property
    def ok(self) -> bool:
        return not self.breaches

    def message(self) -> str:
        head = f"{self.kind} journey: budget {'kept' if self.ok else 'BROKEN: ' + '; '.join(map(str, self.breaches))}"
        return head + "\n" + self.waterfall


def evaluate(run: JourneyRun, jb: JourneyBudget) -> Verdict:
    breaches: list[Breach] = []
    if not run.journeys:
        breaches.append(Breach("total", "confirmed", 1, 0))
    total = run.total()
    for m, lim in jb.total.items():
        if run.journeys and total.get(m) > lim:
            breaches.append(Breach("total", m, lim, total.get(m)))
    for hop, limits in jb.hops.items():
        s = run.hop(hop)
        for m, lim in limits.items():
            if run.journeys and s.get(m) > lim:
                breaches.append(Breach(hop, m, lim, s.get(m)))
    if len(run.lost) > jb.lost:
        breaches.append(Breach("total", "lost", jb.lost, len(run.lost)))
    if len(run.duplicated) > jb.duplicated:
        breaches.append(Breach("total", "duplicated", jb.duplicated, len(run.duplicated)))
    return Verdict(run.kind, breaches, waterfall(run, jb, breaches))


def waterfall(run: JourneyRun, jb: JourneyBudget | None = None, breaches: list[Breach] | None = None) -> str:
    """Each hop's p50/p99 and share of the mean total; the culprit marked."""
    jb = jb or JourneyBudget()
    breaches = breaches or []
    broke_hops = {b.scope for b in breaches if b.scope != "total"}
    total_mean = sum(run.hop_mean(h) for h in run.hops_present()) or float("nan")
    culprit = None
    if any(b.scope == "total" for b in breaches) and not broke_hops and run.hop_times:
        culprit = max(run.hops_present(), key=run.hop_mean)
    rows: list[list[object]] = []
    for h in run.hops_present():
        s = run.hop(h)
        share = run.hop_mean(h) / total_mean * 100.0
        limits = ", ".join(f"{m}<={v:g}" for m, v in jb.hops.get(h, {}).items())
        mark = ""
        if h in broke_hops:
            mark = "<< BROKE its budget"
        elif h == culprit:
            mark = "<< largest share"
        bar = "#" * max(0, min(40, round(share / 2.5)))
        rows.append([LABELS[h], s.p50, s.p99, f"{share:5.1f}%", bar, limits, mark])
    t = run.total()
    rows.append(["end-to-end", t.p50, t.p99, "100.0%", "", ", ".join(f"{m}<={v:g}" for m, v in jb.total.items()), ""])
    text = render(["hop (ms)", "p50", "p99", "share", "", "budget", ""], rows, align="lrrrlll")
    look = [h for h in (broke_hops or ({culprit} if culprit else set())) if h in CONTAINS.get(run.kind, {})]
    for h in look:
        text += f"\n  {h} covers: {CONTAINS[run.kind][h]}"
    return text
