"""A group journey: one command to N lights, timed on the host clock.

The command goes out either as N per-device commands sent back to back
(mode ``each``) or as one message on a group topic every light subscribes to
(mode ``group``). Each light reports its own state with the command's id; its
``t_pin`` (mapped onto the host clock by that device's clock) says when its
light came on. From the first command handed to the transport:

- first-on: the first light's pin written,
- all-on: the last light's pin written,
- spread: all-on minus first-on (how far apart the room's lights switched).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from host_harness.core import latency

MODES = ("each", "group")
FIGURES = ("first_on", "all_on", "spread", "all_confirmed")
LABELS = {
    "first_on": "first light on",
    "all_on": "all lights on",
    "spread": "spread (all - first)",
    "all_confirmed": "all confirmed",
}


@dataclass
class GroupJourney:
    id: str
    mode: str  # "each" or "group"
    t_send_ns: int  # host ns: the first command handed to the transport
    t_sent_last_ns: int  # host ns: the last one (== t_send_ns for a group message)
    pin_ns: dict[str, int] = field(default_factory=dict)  # device id -> pin written, host clock
    pin_ticks: dict[str, int] = field(default_factory=dict)  # device id -> its t_pin as it reported it
    confirm_ns: dict[str, int] = field(default_factory=dict)  # device id -> its state received
    missing: list[str] = field(default_factory=list)  # devices that never confirmed
    dup: list[str] = field(default_factory=list)  # devices that had seen the id (answered on .../ack)

    @property
    def complete(self) -> bool:
        return not self.missing

    def _ms(self, t_ns: int) -> float:
        return (t_ns - self.t_send_ns) / 1e6

    @property
    def first_on_ms(self) -> float:
        return self._ms(min(self.pin_ns.values()))

    @property
    def all_on_ms(self) -> float:
        return self._ms(max(self.pin_ns.values()))

    @property
    def spread_ms(self) -> float:
        return (max(self.pin_ns.values()) - min(self.pin_ns.values())) / 1e6

    @property
    def all_confirmed_ms(self) -> float:
        return self._ms(max(self.confirm_ns.values()))

    @property
    def send_ms(self) -> float:
        """How long handing the N commands over took (0 for a group message)."""
        return (self.t_sent_last_ns - self.t_send_ns) / 1e6

    def figure(self, name: str) -> float:
        return float(getattr(self, f"{name}_ms"))

    def as_dict(self) -> dict[str, object]:
        d: dict[str, object] = {"id": self.id, "mode": self.mode, "missing": self.missing, "dup": self.dup}
        if self.pin_ns:
            d.update({f"{f}_ms": self.figure(f) for f in FIGURES})
        d["send_ms"] = self.send_ms
        return d


def summarize(journeys: Iterable[GroupJourney], name: str) -> latency.Summary:
    """p50/p99/... of one figure over the complete group journeys."""
    return latency.summarize(j.figure(name) for j in journeys if j.complete and j.pin_ns)


def rows(runs: dict[str, Sequence[GroupJourney]]) -> list[list[object]]:
    """Table rows: per mode and figure, p50, p99 and max (ms), and how many were incomplete."""
    out: list[list[object]] = []
    for mode, js in runs.items():
        incomplete = sum(1 for j in js if not j.complete)
        for f in FIGURES:
            s = summarize(js, f)
            out.append([f"{mode}: {LABELS[f]}", s.count, incomplete, s.p50, s.p99, s.max])
    return out


HEADERS = ["group journey (ms)", "n", "incomplete", "p50", "p99", "max"]
