"""Sending on schedule: an open-loop sender that wakes late adds its own lateness to every journey.

``time.sleep`` on a machine whose CPUs sit idle between commands wakes after the
time asked: timer slack, then an idle CPU coming back. How late depends on the
machine and on how long it slept: 0.1–0.3 ms on a quiet machine, 1–2 ms after
200 ms on a virtual machine whose host deschedules an idle CPU. An open loop
times each journey from its intended start, so that lateness would count as the
device's. ``until`` sleeps to just before the time and spins the rest, giving
the interpreter up on each turn but the last few µs' so other threads (the MQTT
client's reader) are not held off meanwhile. ``Pacer`` learns how late this
machine's sleeps wake and spins that long.
"""

from __future__ import annotations

import time

SPIN_NS = 500_000  # the last stretch before the intended time is spun, not slept
YIELD_NS = 30_000  # and its last few µs without giving the interpreter up (a turn that does can take that long)
LEARN = 32  # a Pacer spins as long as the latest of its last LEARN sleeps woke late
MARGIN_NS = 100_000  # plus this


def spin_for(interval_ns: float) -> int:
    """The most to spin before each send of a schedule ``interval_ns`` apart: a twentieth of the
    interval (at 1000/s a longer spin took half a core from the device and the broker, and the
    tails grew)."""
    return int(interval_ns / 20)


def until(t_ns: int, spin_ns: int = SPIN_NS) -> int:
    """Return at monotonic ``t_ns`` (at once when it has passed), sleeping until ``spin_ns``
    before it; returns the time it returned."""
    now = time.monotonic_ns()
    if t_ns - now > spin_ns:
        time.sleep((t_ns - now - spin_ns) / 1e9)
    return _spin(t_ns)


def _spin(t_ns: int) -> int:
    while (now := time.monotonic_ns()) < t_ns - YIELD_NS:
        time.sleep(0)  # lets other threads run; a plain busy loop would hold the GIL for its whole switch interval
    while (now := time.monotonic_ns()) < t_ns:
        pass  # the last few µs: one more turn of the loop above could overshoot by as much
    return now


class Pacer:
    """``until`` for a schedule ``interval_ns`` apart that spins as long as this machine's sleeps
    have lately woken late (the latest of the last ``LEARN``, plus ``MARGIN_NS``): at least
    ``SPIN_NS``, at most ``spin_for(interval_ns)``."""

    def __init__(self, interval_ns: float) -> None:
        self.cap = spin_for(interval_ns)
        self.spin_ns = min(SPIN_NS, self.cap)
        self.missed = 0  # sends whose sleep woke later than the spin could cover
        self.woke: list[int] = []  # how late each sleep woke (ns)
        self.most_spun = self.spin_ns

    def until(self, t_ns: int) -> int:
        """Return at monotonic ``t_ns`` (at once when it has passed); returns the time it returned.
        What it learns is done before the spin: after it, the caller's send comes at once (on
        this machine a few lines of Python after 200 ms idle took 0.2-0.5 ms)."""
        now = time.monotonic_ns()
        spin = self.spin_ns
        if t_ns - now > spin:
            wake = t_ns - spin
            time.sleep((wake - now) / 1e9)
            late = max(0, time.monotonic_ns() - wake)
            self.missed += late > spin
            self.woke.append(late)
            self.spin_ns = min(self.cap, max(SPIN_NS, max(self.woke[-LEARN:]) + MARGIN_NS))
            self.most_spun = max(self.most_spun, spin)
        return _spin(t_ns)

    def describe(self) -> str:
        """How late this machine's sleeps woke, and what the spin covered: one line."""
        if not self.woke:
            return "no send waited long enough to sleep"
        w = sorted(self.woke)
        p50, top = w[len(w) // 2] / 1e6, w[-1] / 1e6
        return (
            f"its sleeps woke {p50:.3f} ms late at p50 (max {top:.3f}; this machine's idle wake-up); "
            f"it spun up to {self.most_spun / 1e6:.3f} ms before a send; "
            f"{self.missed} of {len(w)} sleeps woke later than the spin covered"
        )
