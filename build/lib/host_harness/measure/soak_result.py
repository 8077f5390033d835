"""What a soak saw: counts, mismatches, heap samples, and their tables."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from host_harness.core.table import render

HEAP_SLACK = 4096  # bytes the heap may differ between the first and last sample


@dataclass
class HeapSample:
    commands: int
    elapsed_s: float
    mem_alloc: int
    mem_free: int
    errors: int
    changes: int


@dataclass
class SoakResult:
    commands: int = 0
    batches: int = 0
    duration_s: float = 0.0
    samples: list[HeapSample] = field(default_factory=list)
    by_kind: dict[str, int] = field(default_factory=dict)
    changes: int = 0
    errors: int = 0
    mqtt_errors: int = 0
    presses: int = 0
    button_changes: int = 0
    out_of_order: int = 0  # changes reported on the console after a later change
    mqtt_drops: list[str] = field(default_factory=list)  # why the device's MQTT link went down
    mqtt_unchecked: int = 0  # MQTT commands sent while the link dropped, not checked
    internal_errors: list[dict[str, Any]] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)
    alive: bool = True
    bad_noise: list[str] = field(default_factory=list)

    @property
    def heap_growth(self) -> int:
        if len(self.samples) < 2:
            return 0
        return self.samples[-1].mem_alloc - self.samples[0].mem_alloc

    @property
    def ok(self) -> bool:
        return (
            self.alive
            and not self.mismatches
            and not self.internal_errors
            and not self.bad_noise
            and not self.mqtt_drops
            and self.presses == self.button_changes
            and self.heap_growth <= HEAP_SLACK
        )

    def heap_table(self) -> str:
        base = self.samples[0].mem_alloc if self.samples else 0
        rows = [
            [s.commands, f"{s.elapsed_s:.1f}", s.mem_alloc, s.mem_free, s.mem_alloc - base, s.errors, s.changes]
            for s in self.samples
        ]
        return render(["commands", "time s", "mem_alloc", "mem_free", "growth", "errors", "changes"], rows)

    def summary(self) -> str:
        allocs = [s.mem_alloc for s in self.samples] or [0]
        frees = [s.mem_free for s in self.samples] or [0]
        rate = self.commands / self.duration_s if self.duration_s else 0.0
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.by_kind.items(), key=lambda kv: -kv[1]))
        lines = [
            f"commands: {self.commands} in {self.batches} batches, {self.duration_s:.1f} s ({rate:.0f}/s)",
            f"  {kinds}",
            f"answers: {self.changes} changes, {self.errors} serial errors, {self.mqtt_errors} MQTT errors, "
            f"{self.button_changes}/{self.presses} presses toggled; "
            f"{self.out_of_order} changes reported on the console after a later one",
            f"heap: mem_alloc min {min(allocs)} max {max(allocs)}, growth {self.heap_growth:+d} B; "
            f"mem_free min {min(frees)}",
            f"MQTT link dropped: {len(self.mqtt_drops)} {self.mqtt_drops[:3]}; "
            f"{self.mqtt_unchecked} MQTT commands around the drops not checked",
            f"internal errors: {len(self.internal_errors)}; mismatches: {len(self.mismatches)}; "
            f"MemoryError/Traceback on the console: {len(self.bad_noise)}; process alive: {self.alive}",
        ]
        lines += [f"  mismatch: {m}" for m in self.mismatches[:10]]
        lines += [f"  internal: {e}" for e in self.internal_errors[:5]]
        lines += [f"  console: {n}" for n in self.bad_noise[:5]]
        return "\n".join(lines)
