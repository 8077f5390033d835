"""Latency budgets and verdicts."""

from __future__ import annotations

from dataclasses import dataclass

from . import stats


@dataclass
class Check:
    name: str  # "p50", "p99", "max", "lost"
    limit: float
    measured: float

    @property
    def ok(self) -> bool:
        return self.measured <= self.limit


def check(budget_ms: dict[str, float], e2e_ms: list[float], lost: int, lost_limit: int = 0) -> list[Check]:
    s = stats.summary(e2e_ms)
    checks = []
    for name, limit in budget_ms.items():
        if name in s:
            checks.append(Check(name, limit, s[name]))
    checks.append(Check("lost", float(lost_limit), float(lost)))
    return checks


def describe(checks: list[Check]) -> str:
    parts = []
    for c in checks:
        if c.name == "lost":
            parts.append(f"lost {int(c.measured)} <= {int(c.limit)} {'PASS' if c.ok else 'FAIL'}")
        else:
            parts.append(f"{c.name} {c.measured:.3f} ms <= {c.limit:g} ms {'PASS' if c.ok else 'FAIL'}")
    return "; ".join(parts)
