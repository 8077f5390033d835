"""Budget assertions for tests, with figures recorded for CI dashboards."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from host_harness.core.budgets import Budget, Verdict, evaluate
from host_harness.core.results import JourneyRun

Record = Callable[[str, object], None]


def record_figures(run: JourneyRun, record: Record) -> None:
    """p50/p99 of the journey and of each hop, as JUnit properties."""
    t = run.total()
    record(f"{run.kind}.e2e.p50_ms", round(t.p50, 3))
    record(f"{run.kind}.e2e.p99_ms", round(t.p99, 3))
    record(f"{run.kind}.confirmed", len(run.journeys))
    record(f"{run.kind}.lost", len(run.lost))
    record(f"{run.kind}.duplicated", len(run.duplicated))
    for h in run.hops_present():
        s = run.hop(h)
        record(f"{run.kind}.{h}.p50_ms", round(s.p50, 3))
        record(f"{run.kind}.{h}.p99_ms", round(s.p99, 3))


def assert_within_budget(
    run: JourneyRun, budget: Budget, record: Record | None = None, also: Sequence[str] = ()
) -> Verdict:
    """Raise AssertionError with the waterfall when the budget is broken. ``also``: culprits found
    outside the delays (a link's packet record), added to a broken budget's diagnosis."""
    __tracebackhide__ = True  # pytest: the failure is the waterfall, not this frame
    v = evaluate(run, budget.for_kind(run.kind))
    if not v.ok:
        v.diagnosis.extend(also)
    if record is not None:
        record_figures(run, record)
        record(f"{run.kind}.budget", "kept" if v.ok else "broken")
    if not v.ok:
        raise AssertionError(v.message())
    return v
