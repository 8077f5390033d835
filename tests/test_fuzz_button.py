"""Button storms: many simulated presses queued at once, alone and among serial commands."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from host_harness.core.events import Event, WaitTimeout
from host_harness.dut.device import Device
from host_harness.pytest_plugin import DeviceFactory


def _storm(dev: Device, presses: int, sets: int, timeout: float) -> tuple[list[Event], list[Event]]:
    """Queue ``presses`` presses at once (each bounces 3 times on press and on
    release), with ``sets`` serial sets pipelined in between; returns the
    answers to the presses and the button changes."""
    since = dev.log.cursor
    pids = [dev.ids() for _ in range(presses)]
    lines = [json.dumps({"op": "press", "id": p}).encode() + b"\n" for p in pids]
    for k in range(sets):
        cmd = {"op": "set", "id": dev.ids(), "brightness": k % 255 + 1}
        lines.insert(k * len(lines) // max(1, sets), json.dumps(cmd).encode() + b"\n")
    dev.link.write_raw(b"".join(lines))
    try:  # every press answered (queued or refused), then every queued one released
        _nth(dev, since, lambda e: e.get("id") in pids, presses, timeout, f"answers to {presses} presses")
        queued = len([e for e in dev.log.events(since) if e.kind == "ack" and e.get("id") in pids])
        # a press toggling twice does so before the debouncer re-arms, i.e. before its release
        _nth(dev, since, lambda e: e.kind == "released", queued, timeout, f"the release of {queued} queued presses")
    except WaitTimeout:
        if not _crashed(dev):
            raise
    if not _crashed(dev):
        dev.get()  # and everything written before it is in the log
    evs = dev.log.events(since)
    answers = [e for e in evs if e.get("id") in pids]
    return answers, [e for e in evs if e.kind == "change" and e.get("src") == "button"]


def _nth(dev: Device, since: int, pred: Callable[[Event], bool], n: int, timeout: float, what: str) -> None:
    """Wait for the n-th event after ``since`` that matches ``pred``."""
    seen = [0]

    def count(e: Event) -> bool:
        seen[0] += 1 if pred(e) else 0
        return seen[0] >= n

    if n:
        dev.log.wait_for(count, timeout, what, since)


def _crashed(dev: Device) -> list[str]:
    dead = [] if dev.unix is None or dev.unix.alive else ["the process exited"]
    return dead + [n for n in dev.link.noise if "Traceback" in n or "MemoryError" in n]


@pytest.mark.needs_sim_pin
def test_a_storm_of_bouncing_presses_toggles_once_per_press(device_factory: DeviceFactory) -> None:
    """Presses queued at once (they run one after another), alone and among
    serial commands: every press toggles the light exactly once."""
    dev = device_factory()
    dev.wait_mqtt()
    for presses, sets in ((1, 0), (6, 0), (8, 200)):
        before = dev.get()
        answers, toggles = _storm(dev, presses, sets, timeout=presses * 0.5 + 5)
        assert not _crashed(dev), dev.link.noise_tail(20)
        assert [e.kind for e in answers] == ["ack"] * presses, [e.data for e in answers]
        assert len(toggles) == presses, f"{presses} presses made {len(toggles)} toggles"
        after = dev.get()
        assert after.get("seq") == before.get("seq") + presses + sets
        want = before.get("state") if presses % 2 == 0 else ("OFF" if before.get("state") == "ON" else "ON")
        assert sets or after.get("state") == want


@pytest.mark.needs_sim_pin
def test_a_long_storm_of_presses_neither_crashes_nor_loses_a_press(
    device_factory: DeviceFactory, request: pytest.FixtureRequest
) -> None:
    """40 presses queued at once. The firmware may refuse presses it has no
    room for (with an error), but each press it accepts toggles exactly once."""
    dev = device_factory()
    dev.wait_mqtt()
    presses = 40
    answers, toggles = _storm(dev, presses, 0, timeout=presses * 0.5 + 5)
    assert not _crashed(dev), dev.link.noise_tail(20)
    acked = [e for e in answers if e.kind == "ack"]
    assert len(acked) + len([e for e in answers if e.kind == "error"]) == presses, [e.data for e in answers]
    assert len(toggles) == len(acked), f"{len(acked)} presses accepted, {len(toggles)} toggles"
    dev.get()
