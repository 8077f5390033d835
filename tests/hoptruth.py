"""Check a run's hops against the Unix port's true clock.

On the Unix port the device's ``ticks_us`` is the host's CLOCK_MONOTONIC
(core.clocktruth), so each journey's hops can be computed exactly. A run
measured with a synced clock must then agree with them hop by hop, within
the error bound the clock sync reports; and no hop may be negative beyond
that bound. (That the hops add up to the end-to-end time holds by
construction, whatever the clock, so it is not checked anywhere.)
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

from host_harness.core.clocktruth import UnixClockTruth
from host_harness.core.hops import UNTAPPED_HOPS, HopTimes
from host_harness.core.journey import Journey

# The clock-sync error targets (issue: serial 100 µs, MQTT 250 µs), for runs whose own bound is not at hand.
SERIAL_SYNC_TARGET_US = 100.0
MQTT_SYNC_TARGET_US = 250.0
# Rounding: device ticks truncate to the µs (the truth maps them to its middle), the model rounds to the ns.
ROUNDING_US = 1.0


def true_hops_ms(j: Journey, truth: UnixClockTruth) -> dict[str, float]:
    """Each hop from the journey's stamps placed on the host clock exactly (written out here, not
    taken from core.hops, so that a wrong split is caught too)."""
    near = j.t_confirm_ns
    rx, pin, tx = (truth.device_to_host_ns(t, near) for t in (j.dev_t_rx, j.dev_t_pin, j.dev_t_tx))
    sensed = pin if j.dev_t_sense is None else truth.device_to_host_ns(j.dev_t_sense, near)
    start = j.t_send_ns if j.t_intended_ns is None else j.t_intended_ns
    ns = {
        "host_queue": j.t_send_ns - start,
        "host_to_device": rx - j.t_send_ns,
        "device_apply": pin - rx,
        "device_sense": sensed - pin,
        "device_report": tx - sensed,
        "device_to_host": j.t_confirm_ns - tx,
    }
    # Taps (host clock) split the network hops at each broker, host side first on the way down.
    brokers = list(j.taps)
    down = [("host", j.t_send_ns), *((b, j.taps[b][0]) for b in brokers), ("device", rx)]
    up = [("device", tx), *((b, j.taps[b][1]) for b in reversed(brokers)), ("host", j.t_confirm_ns)]
    for whole, points in (("host_to_device", down), ("device_to_host", up)):
        if brokers and all(t is not None for _, t in points):
            del ns[whole]
            for (a, ta), (b, tb) in itertools.pairwise(points):
                assert ta is not None and tb is not None
                ns[f"{a}_to_{b}"] = tb - ta
    return {k: v / 1e6 for k, v in ns.items()}


def crossing(hop: str) -> bool:
    """Hops from one clock to the other carry the sync's offset error; within one clock it cancels."""
    return hop.endswith("_to_device") or hop.startswith("device_to_")


def check_hops_against_truth(hop_times: Iterable[HopTimes], truth: UnixClockTruth, bound_us: float) -> int:
    """Assert every hop >= -bound and within ``bound_us`` of its true value; returns the hops checked.

    Hops between two stamps of the same clock must match the truth to the rounding.
    """
    checked = 0
    for ht in hop_times:
        true = true_hops_ms(ht.journey, truth)
        assert set(ht.hops) == set(true), ht.hops
        for name, got in ht.hops.items():
            tol_ms = ((bound_us if crossing(name) else 0) + ROUNDING_US) / 1000
            where = f"{ht.journey.kind} journey {ht.journey.id}, hop {name}: {got:.4f} ms, true {true[name]:.4f} ms"
            if name in UNTAPPED_HOPS:  # a hop ending at a tap may be short by the tap's delivery (tests/test_taps.py)
                assert true[name] >= -ROUNDING_US / 1000, f"{where}: negative on the true clock"
                assert got >= -tol_ms, f"{where}: negative beyond the sync bound ±{bound_us:.0f} µs"
            assert abs(got - true[name]) <= tol_ms, f"{where}: off by more than {tol_ms * 1000:.0f} µs"
            checked += 1
    return checked
