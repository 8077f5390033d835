"""Latency budgets (TOML) per board and journey, and verdicts that explain.

A budget file::

    [journey.mqtt]            # the whole journey
    p50 = 10.0                # ms; any of p50, p90, p99, "p99.9", max
    p99 = 50.0
    lost = 0                  # journeys never confirmed
    duplicated = 0            # confirmations seen twice

    [journey.mqtt.hops.device_apply]   # optional, per hop
    p99 = 5.0

    [assumes]                 # optional: what the limits assume of the device
    wifi_pm = "none"          # its Wi-Fi power save (none, min, max; "wifi_pm" in info)

Defaults ship in boards/ (named by the board's "budget" key); a user's file
given with --budget is laid over them limit by limit: what it does not name
stays the board's.

A run behind a link profile (``--link NAME``) lays a file's
``[link.NAME.journey.KIND]`` tables over its plain ones, limit by limit.

When a budget breaks, the verdict also says which usual culprit the shape of
the delays points at, with its fix (see ``core.diagnose``).
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from host_harness.core.blame import Blame, blame
from host_harness.core.diagnose import explain
from host_harness.core.hops import LABELS, covers
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
    assumes: dict[str, str] = field(default_factory=dict)  # device info key -> the value the limits assume

    def for_kind(self, kind: str) -> JourneyBudget:
        return self.journeys.get(kind, JourneyBudget())


JOURNEY_KINDS = ("mqtt", "serial", "button")
# What a budget may assume of the device ([assumes]), each an info field, with its values.
ASSUMABLE = {"wifi_pm": ("none", "min", "max")}


def _limit(v: Any, where: str, integer: bool = False) -> float:
    """A limit: a non-negative number (an integer count for lost/duplicated)."""
    if isinstance(v, bool) or not isinstance(v, int | float) or (integer and not isinstance(v, int)):
        raise ValueError(f"{where} = {v!r}: not {'a whole number' if integer else 'a number (ms)'}")
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"{where} = {v!r}: a limit must be a number >= 0")
    return float(v)


def _parse(data: dict[str, Any], source: str, links: bool = True) -> Budget:
    b = Budget(source)
    extra = [k for k in data if k not in ("journey", "assumes") and not (links and k == "link")]
    if extra:
        raise ValueError(
            f"{source}: unknown key {extra[0]!r}; a budget has only [journey.<kind>], [assumes] "
            + ("and [link.<profile>.journey.<kind>] tables" if links else "tables")
        )
    assumes = data.get("assumes") or {}
    if not isinstance(assumes, dict):
        raise ValueError(f"{source}: assumes must be a table ([assumes])")
    for k, v in assumes.items():
        if k not in ASSUMABLE:
            raise ValueError(f"{source}: [assumes] {k}: unknown; a budget may assume {', '.join(ASSUMABLE)}")
        if v not in ASSUMABLE[k]:
            raise ValueError(f"{source}: [assumes] {k} = {v!r}: must be one of {', '.join(ASSUMABLE[k])}")
        b.assumes[k] = v
    link_tables = data.get("link") or {}
    if not isinstance(link_tables, dict) or not all(isinstance(v, dict) for v in link_tables.values()):
        raise ValueError(f"{source}: link must hold tables ([link.<profile>.journey.<kind>])")
    for name, sub in link_tables.items():
        _parse(sub, f"{source} [link.{name}]", links=False)
    journeys = data.get("journey") or {}
    if not isinstance(journeys, dict):
        raise ValueError(f"{source}: journey must be a table ([journey.<kind>])")
    for kind, spec in journeys.items():
        if kind not in JOURNEY_KINDS:
            known = ", ".join(JOURNEY_KINDS)
            raise ValueError(f"{source}: [journey.{kind}]: unknown journey {kind!r}; journeys are {known}")
        if not isinstance(spec, dict):
            raise ValueError(f"{source}: [journey.{kind}] must be a table")
        jb = JourneyBudget()
        for k, v in spec.items():
            where = f"{source}: [journey.{kind}] {k}"
            if k in METRICS:
                jb.total[k] = _limit(v, where)
            elif k == "lost":
                jb.lost = int(_limit(v, where, integer=True))
            elif k == "duplicated":
                jb.duplicated = int(_limit(v, where, integer=True))
            elif k == "hops":
                if not isinstance(v, dict):
                    raise ValueError(f"{where}: must be a table ([journey.{kind}.hops.<hop>])")
                for hop, limits in v.items():
                    if hop not in LABELS:
                        raise ValueError(f"{source}: unknown hop {hop!r}; hops are {', '.join(LABELS)}")
                    if not isinstance(limits, dict):
                        raise ValueError(f"{source}: [journey.{kind}.hops.{hop}] must be a table")
                    bad = [m for m in limits if m not in METRICS]
                    if bad:
                        raise ValueError(
                            f"{source}: unknown metric {bad[0]!r} for hop {hop}; metrics are {', '.join(METRICS)}"
                        )
                    jb.hops[hop] = {
                        m: _limit(x, f"{source}: [journey.{kind}.hops.{hop}] {m}") for m, x in limits.items()
                    }
            else:
                raise ValueError(
                    f"{source}: unknown key {k!r} in [journey.{kind}]; keys are "
                    f"{', '.join(METRICS)}, lost, duplicated and [journey.{kind}.hops.<hop>]"
                )
        b.journeys[kind] = jb
    return b


def assumption_warnings(budget: Budget, info: dict[str, Any]) -> list[str]:
    """One line per [assumes] value the device's info contradicts (a device that
    does not report the field is not held to it)."""
    out = []
    for k, want in budget.assumes.items():
        got = info.get(k)
        if got is not None and got != want:
            out.append(
                f"warning: the budget ({budget.source}) assumes {k} = {want!r}, the device reports {got!r}: "
                "its limits may not hold for this device"
            )
    return out


def _shown(p: Path) -> str:
    try:
        return str(p.resolve().relative_to(ROOT))
    except ValueError:
        return str(p)


def _load_raw(path: str | Path) -> tuple[dict[str, Any], str]:
    """A budget file's TOML, checked (raises ValueError naming the file and key)."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ValueError(f"{p}: no such budget file") from None
    except IsADirectoryError:
        raise ValueError(f"{p}: a folder, not a budget file") from None
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{p}: not a valid budget file (TOML): {e}") from None
    source = _shown(p)
    _parse(data, source)
    return data, source


def _for_link(data: dict[str, Any], source: str, link: str | None) -> tuple[dict[str, Any], str]:
    """A file's plain tables, with its [link.<link>] tables laid over them when it has some."""
    plain = {k: v for k, v in data.items() if k != "link"}
    sub = (data.get("link") or {}).get(link) if link else None
    if not sub:
        return plain, source
    return _merge(plain, sub), f"{source} [link.{link}]"


def load_file(path: str | Path, link: str | None = None) -> Budget:
    data, source = _load_raw(path)
    return _parse(*_for_link(data, source, link))


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` laid onto ``base`` limit by limit (tables merged, values replaced)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def for_board(board: dict[str, Any], override: str | Path | None = None, link: str | None = None) -> Budget:
    """The board's default budget with a user's file laid over it, limit by limit:
    a limit the user's file does not name stays the board's. ``link``: each
    file's tables for that link profile laid over its plain ones first."""
    name = board.get("budget")
    if not name and override is None:
        return Budget("(none)")
    base, base_source = _for_link(*_load_raw(BOARDS_DIR / name), link) if name else ({}, "(none)")
    if override is None:
        return _parse(base, base_source)
    user, user_source = _for_link(*_load_raw(override), link)
    return _parse(_merge(base, user), f"{user_source} over {base_source}")


@dataclass
class Breach:
    scope: str  # "total" or a hop name
    metric: str
    limit: float
    measured: float

    def __str__(self) -> str:
        if self.metric == "lost":
            return f"lost {self.measured:g} > {self.limit:g} (journeys never confirmed)"
        if self.metric == "duplicated":
            return f"duplicated {self.measured:g} > {self.limit:g} (confirmations seen twice)"
        if self.metric == "confirmed":
            return "lost: no journey confirmed"
        where = "end-to-end" if self.scope == "total" else f"hop {self.scope}"
        return f"{where} {self.metric} {self.measured:g} ms > {self.limit:g} ms"


@dataclass
class Verdict:
    kind: str
    breaches: list[Breach]
    waterfall: str
    blames: list[Blame] = field(default_factory=list)  # the hop behind each broken end-to-end percentile
    diagnosis: list[str] = field(default_factory=list)  # culprits recognised in a broken budget's delays

    @property
    def ok(self) -> bool:
        return not self.breaches

    def message(self) -> str:
        head = f"{self.kind} journey: budget {'kept' if self.ok else 'BROKEN: ' + '; '.join(map(str, self.breaches))}"
        text = head + "\n" + self.waterfall
        for line in self.diagnosis:
            text += f"\n  diagnosis: {line}"
        return text


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
    blames = [b for b in (blame(run, x.metric) for x in breaches if x.scope == "total") if b is not None]
    return Verdict(run.kind, breaches, waterfall(run, jb, breaches, blames), blames, diagnose_breaches(run, breaches))


def diagnose_breaches(run: JourneyRun, breaches: list[Breach]) -> list[str]:
    """For each broken scope (a hop, or end to end), the culprits its samples' shape points at."""
    out: list[str] = []
    for scope in dict.fromkeys(b.scope for b in breaches if b.metric not in ("lost", "duplicated", "confirmed")):
        if scope == "total":
            samples, where = [j.e2e_ms for j in run.journeys], "end-to-end"
        else:
            samples, where = run.hop_samples(scope), scope
        out += [f"{where}: {line}" for line in explain(samples)]
    return out


def waterfall(
    run: JourneyRun,
    jb: JourneyBudget | None = None,
    breaches: list[Breach] | None = None,
    blames: list[Blame] | None = None,
) -> str:
    """Each hop's p50/p99 and share of the mean total; marked: a hop that broke
    its own limit, and the hop whose time makes up a broken end-to-end tail."""
    jb = jb or JourneyBudget()
    breaches = breaches or []
    blames = blames or []
    broke_hops = {b.scope for b in breaches if b.scope != "total"}
    total_mean = sum(run.hop_mean(h) for h in run.hops_present()) or float("nan")
    marks: dict[str, list[str]] = {}
    for h in sorted(broke_hops):
        marks.setdefault(h, []).append("BROKE its budget")
    for bl in blames:
        marks.setdefault(bl.hop, []).append(f"{bl.share:.0f}% of the end-to-end {bl.metric} tail")
    rows: list[list[object]] = []
    for h in run.hops_present():
        s = run.hop(h)
        share = run.hop_mean(h) / total_mean * 100.0
        limits = ", ".join(f"{m}<={v:g}" for m, v in jb.hops.get(h, {}).items())
        mark = ("<< " + "; ".join(marks[h])) if h in marks else ""
        bar = "#" * max(0, min(40, round(share / 2.5)))
        rows.append([LABELS[h], s.p50, s.p99, f"{share:5.1f}%", bar, limits, mark])
    t = run.total()
    rows.append(["end-to-end", t.p50, t.p99, "100.0%", "", ", ".join(f"{m}<={v:g}" for m, v in jb.total.items()), ""])
    text = render(["hop (ms)", "p50", "p99", "share", "", "budget", ""], rows, align="lrrrlll")
    for bl in blames:
        text += f"\n  {bl}"
    for h in run.hops_present():
        if h in marks and covers(run.kind, h):
            text += f"\n  {h} covers: {covers(run.kind, h)}"
    for b in breaches:
        if b.metric in ("lost", "confirmed", "duplicated"):
            what = "duplicates" if b.metric == "duplicated" else "loss"
            text += f"\n  {b}: {what}, not a hop's time, broke this; no hop is blamed for it"
    return text
