"""The wake benchmark's probes (benchmarks/wake.py) stamp the moment their wait ended."""

from __future__ import annotations

import importlib.util
import time
from types import ModuleType

import pytest

from host_harness.dut.unix_device import DEFAULT_HEAPSIZE, find_micropython
from host_harness.paths import ROOT


def _wake() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_wake", ROOT / "benchmarks" / "wake.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("wait", ["read", "poll", "asyncio", "firmware"])
def test_a_probe_stamps_between_the_send_and_its_answer(wait: str) -> None:
    # The Unix port's ticks_us is the host's CLOCK_MONOTONIC: the stamp must lie after the host's
    # send began and before its answer arrived. A probe that stamped before its wait (or on another
    # clock) reads negative or beyond the round trip.
    wake = _wake()
    probe = wake.Probe(wait, find_micropython(), DEFAULT_HEAPSIZE)
    try:
        for _ in range(3):
            time.sleep(0.02)
            t0 = time.monotonic_ns()
            us = probe.wake()
            rtt_us = (time.monotonic_ns() - t0) / 1e3
            assert 0 < us < rtt_us, f"{wait}: woke {us:.0f} µs after the send, answered after {rtt_us:.0f} µs"
    finally:
        probe.close()
    assert probe.proc.returncode == 0, f"the {wait} probe did not end by itself once its socket closed"
