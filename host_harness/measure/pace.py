"""Sending on schedule: an open-loop sender that wakes late adds its own lateness to every journey.

``time.sleep`` on a machine whose CPUs sit idle between commands wakes 0.1–0.3
ms after the time asked (timer slack, then an idle CPU coming back); an open
loop times each journey from its intended start, so that lateness would count
as the device's. ``until`` sleeps to just before the time and spins the rest,
giving the interpreter up on each turn but the last few µs' so other threads
(the MQTT client's reader) are not held off meanwhile.
"""

from __future__ import annotations

import time

SPIN_NS = 500_000  # the last stretch before the intended time is spun, not slept
YIELD_NS = 30_000  # and its last few µs without giving the interpreter up (a turn that does can take that long)


def spin_for(interval_ns: float) -> int:
    """How long to spin before each send of a schedule ``interval_ns`` apart: SPIN_NS, but never
    more than a twentieth of the interval (at 1000/s a longer spin took half a core from the
    device and the broker, and the tails grew)."""
    return int(min(SPIN_NS, interval_ns / 20))


def until(t_ns: int, spin_ns: int = SPIN_NS) -> int:
    """Return at monotonic ``t_ns`` (at once when it has passed), sleeping until ``spin_ns``
    before it; returns the time it returned."""
    now = time.monotonic_ns()
    if t_ns - now > spin_ns:
        time.sleep((t_ns - now - spin_ns) / 1e9)
    while (now := time.monotonic_ns()) < t_ns - YIELD_NS:
        time.sleep(0)  # lets other threads run; a plain busy loop would hold the GIL for its whole switch interval
    while (now := time.monotonic_ns()) < t_ns:
        pass  # the last few µs: one more turn of the loop above could overshoot by as much
    return now
