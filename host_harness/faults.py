"""Fault scenarios: every command counted, whatever the network does.

A scenario sends commands the way a careful app does — each with an id,
published at QoS 1 and retried with the same id until it is confirmed — while
a fault is injected, and then counts, per command id:

- applied once: the device applied it exactly once (its serial ``change``
  events, across every device process the scenario ran);
- duplicated: applied more than once;
- lost: never applied, or never confirmed to the host;

and the time to recover: from the fault healing to the next confirmation.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .device import Device
from .events import WaitTimeout
from .mqtt_client import HostMqtt
from .table import render


@dataclass
class Outcome:
    cmd_id: str
    attempts: int
    confirmed: bool
    t_first_send: float  # time.monotonic()
    t_confirmed: float | None


@dataclass
class ScenarioResult:
    name: str
    outcomes: list[Outcome] = field(default_factory=list)
    applied: Counter[str] = field(default_factory=Counter)
    recovery_s: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def sent(self) -> int:
        return len(self.outcomes)

    @property
    def attempts(self) -> int:
        return sum(o.attempts for o in self.outcomes)

    @property
    def applied_once(self) -> int:
        return sum(1 for o in self.outcomes if self.applied[o.cmd_id] == 1)

    @property
    def duplicated(self) -> int:
        return sum(1 for o in self.outcomes if self.applied[o.cmd_id] > 1)

    @property
    def lost(self) -> int:
        return sum(1 for o in self.outcomes if self.applied[o.cmd_id] == 0 or not o.confirmed)

    def row(self) -> list[object]:
        rec = "-" if self.recovery_s is None else f"{self.recovery_s:.2f}"
        return [self.name, self.sent, self.attempts, self.applied_once, self.duplicated, self.lost, rec]

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "sent": self.sent,
            "attempts": self.attempts,
            "applied_once": self.applied_once,
            "duplicated": self.duplicated,
            "lost": self.lost,
            "recovery_s": self.recovery_s,
            "notes": self.notes,
        }


HEADERS = ["scenario", "commands", "publishes", "applied once", "duplicated", "lost", "recovery s"]


def table(results: list[ScenarioResult]) -> str:
    return render(HEADERS, [r.row() for r in results])


class ReliableSender:
    """Publishes commands at QoS 1 and retries each with the same id until confirmed."""

    def __init__(self, mqtt: HostMqtt, base: str, attempt_timeout: float = 2.0) -> None:
        self.mqtt = mqtt
        self.base = base
        self.attempt_timeout = attempt_timeout
        for leaf in ("state", "ack", "error"):
            mqtt.subscribe(f"{base}/{leaf}", qos=1)

    def confirmation(self, cid: str, since: int, timeout: float) -> bool:
        topics = (f"{self.base}/state", f"{self.base}/ack")
        try:
            self.mqtt.log.wait_for(
                lambda e: e.topic in topics and e.get("id") == cid, timeout, f"confirmation of {cid!r}", since
            )
            return True
        except WaitTimeout:
            return False

    def send(self, cid: str, command: dict[str, Any], deadline_s: float = 60.0) -> Outcome:
        payload = json.dumps({**command, "id": cid})
        t0 = time.monotonic()
        attempts = 0
        since = self.mqtt.log.cursor
        while time.monotonic() - t0 < deadline_s:
            attempts += 1
            with contextlib.suppress(ConnectionError):  # broker away: the wait below paces the retry
                self.mqtt.publish(f"{self.base}/set", payload, qos=1)
            left = deadline_s - (time.monotonic() - t0)
            if self.confirmation(cid, since, min(self.attempt_timeout, max(0.05, left))):
                return Outcome(cid, attempts, True, t0, time.monotonic())
        return Outcome(cid, attempts, False, t0, None)


def count_applied(devices: list[Device], ids: set[str]) -> Counter[str]:
    """How often each id was applied, over every device process's serial log."""
    c: Counter[str] = Counter()
    for d in devices:
        for e in d.log.events():
            if e.kind == "change" and not e.get("dup") and e.get("id") in ids:
                c[str(e.get("id"))] += 1
    return c


def run_commands(
    name: str,
    sender: ReliableSender,
    devices: Callable[[], list[Device]],
    ids: Callable[[], str],
    count: int,
    during: Callable[[int], None] | None = None,
    deadline_s: float = 60.0,
) -> ScenarioResult:
    """Send ``count`` alternating commands; ``during(i)`` injects faults before command i."""
    res = ScenarioResult(name)
    for i in range(count):
        if during is not None:
            during(i)
        cmd = {"state": "ON" if i % 2 == 0 else "OFF", "brightness": (i * 37) % 255 + 1}
        res.outcomes.append(sender.send(ids(), cmd, deadline_s))
    res.applied = count_applied(devices(), {o.cmd_id for o in res.outcomes})
    return res
