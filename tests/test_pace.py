"""The open-loop sender's pacing: never early, and other threads keep running while it waits."""

from __future__ import annotations

import random
import socket
import threading
import time

from host_harness.measure import pace


def test_until_never_returns_before_the_time_asked() -> None:
    rng = random.Random(3)
    for _ in range(200):
        t = time.monotonic_ns() + rng.randrange(0, 2 * pace.SPIN_NS)
        assert pace.until(t) >= t
        assert time.monotonic_ns() >= t
    assert pace.until(time.monotonic_ns() - 1_000_000) > 0  # already past: at once


def test_a_thread_woken_while_the_sender_spins_runs_before_the_spin_ends() -> None:
    # The MQTT client's reader is such a thread: a confirmation arriving during
    # the last stretch before a send must not wait for the send.
    a, b = socket.socketpair()
    got: list[int] = []

    def reader() -> None:
        while True:
            data = b.recv(16)
            if data == b"end":
                return
            got.append(time.monotonic_ns())

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    late = 0
    for _ in range(20):
        start = len(got)
        a.send(b"x")
        end = pace.until(time.monotonic_ns() + pace.SPIN_NS - 1)  # all spun, none slept
        late += len(got) == start or got[-1] > end
    a.send(b"end")
    t.join(5)
    a.close()
    b.close()
    assert late <= 2, f"the reader ran only after the spin in {late} of 20 sends"


def _sleeps_waking_late(monkeypatch: object, late_s: float) -> None:
    # A machine whose sleeps wake late_s after the time asked (as an idle
    # virtual machine's do): the real sleep, then the lateness on top.
    real = time.sleep

    def sleep(s: float) -> None:
        real(s + late_s if s > 0 else s)

    monkeypatch.setattr(pace.time, "sleep", sleep)  # type: ignore[attr-defined]


def test_the_pacer_learns_how_late_sleeps_wake_and_sends_on_time(monkeypatch: object) -> None:
    _sleeps_waking_late(monkeypatch, 0.003)
    interval = 100_000_000  # 10/s: up to 5 ms of spin
    gap = 20_000_000  # the test's own gap between sends: the pacer only knows its interval
    pacer = pace.Pacer(interval)
    t0 = time.monotonic_ns() + 1_000_000
    fixed = [pace.until(t) - t for t in (t0 + i * gap for i in range(4))]
    t0 += 4 * gap
    learned = [pacer.until(t) - t for t in (t0 + i * gap for i in range(8))]
    assert min(fixed) >= 2_400_000, f"the fixed spin was not late: {fixed}"
    assert min(learned) >= 0
    assert learned[0] >= 2_400_000, "the first sleep had nothing to learn from"
    # On time as a rule from the second send: the median of the 7 after the first. The machine's
    # own sleeps wake late on top of the 3 ms, by more now and then than the pacer has seen yet.
    assert sorted(learned[1:])[3] < 500_000, f"the pacer stayed late: {learned}"
    assert pacer.spin_ns >= 3_000_000
    assert pacer.missed >= 1
    assert min(pacer.woke) >= 3_000_000  # it learned what the machine did, and says it
    assert f"{pacer.missed} of 8 sleeps woke later" in pacer.describe()


def test_the_pacer_spins_no_more_than_a_twentieth_of_its_interval(monkeypatch: object) -> None:
    _sleeps_waking_late(monkeypatch, 0.003)
    interval = 10_000_000  # 100/s: at most 0.5 ms of spin, so a 3 ms late wake is missed
    pacer = pace.Pacer(interval)
    t0 = time.monotonic_ns() + 1_000_000
    lates = [pacer.until(t0 + i * interval) - (t0 + i * interval) for i in range(6)]
    assert pacer.spin_ns == 500_000
    assert min(lates) >= 2_000_000, lates
    assert pacer.missed == 6
