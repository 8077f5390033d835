"""The clock estimator on synthetic ping samples, and the ticks unwrapper: pure, no device."""

from __future__ import annotations

import random

import pytest

from host_harness.core.clockmodel import ClockEstimator, SyncSample
from host_harness.core.clocktruth import UnixClockTruth
from host_harness.core.ticks import Unwrapper, nearest_unwrap, ticks_diff, ticks_diff_f

SHORT_PERIOD = 2**20  # 1.05 s


def test_ticks_diff_matches_micropython_semantics() -> None:
    p = 2**30
    assert ticks_diff(5, p - 5, p) == 10
    assert ticks_diff(p - 5, 5, p) == -10
    assert ticks_diff(100, 40, p) == 60


def test_unix_clock_truth_maps_raw_ticks_to_the_middle_of_their_host_microsecond() -> None:
    assert UnixClockTruth().device_to_host_ns(1_234_567) == 1_234_567_500
    t = UnixClockTruth(offset_us=1000, period=SHORT_PERIOD)
    host_ns = 7 * SHORT_PERIOD * 1000 + 123_456_000  # seven wraps in
    raw = (host_ns // 1000 + 1000) % SHORT_PERIOD
    assert t.device_to_host_ns(raw, near_host_ns=host_ns + 50_000_000) == host_ns + 500


# -- Unwrapper ------------------------------------------------------------------


def test_unwrapper_follows_many_wraps_and_tolerates_backward_jitter() -> None:
    period = 1000
    rng = random.Random(7)
    u = Unwrapper(period)
    true = 123_456_789  # unwrapped values relative to the first one are what matter
    first = u.feed(true % period)
    highest = true
    for _ in range(5000):
        true += rng.randint(-150, 400)  # forward steps, sometimes a little backwards
        highest = max(highest, true)
        assert u.feed(true % period) - first == true - 123_456_789
    assert u.wraps == highest // period - 123_456_789 // period > 500


def test_unwrapper_backward_step_is_not_a_wrap_but_a_forward_crossing_is() -> None:
    u = Unwrapper(2**20)
    assert u.feed(100) == 100
    assert u.feed(2**20 - 50) == -50  # 150 µs behind: jitter, not a wrap
    assert u.feed(30) == 30
    assert u.feed(2**20 - 10) == -10
    assert u.feed(400_000) == 400_000
    assert u.feed(800_000) == 800_000
    assert u.feed(5) == 2**20 + 5  # forward across the wrap
    assert u.wraps == 1


def test_unwrapper_anchor_bridges_gaps_longer_than_half_a_period() -> None:
    p = 2**20
    u = Unwrapper(p)
    u.feed(1000)
    # 3.3 periods later: without the anchor this would be ambiguous
    t = 1000 + int(3.3 * p)
    assert u.feed(t % p, expected=t + 4000) == t
    with pytest.raises(ValueError, match="outside"):
        u.feed(p)
    assert nearest_unwrap(5, 10 * p, p) == 10 * p + 5


# -- the estimator on synthetic samples --------------------------------------


def _synthetic(
    skew_ppm: float, offset_us: float, period: int, seconds: float, n: int, seed: int = 1
) -> tuple[ClockEstimator, int]:
    """Pings with random, lopsided delays against a device clock drifting at skew_ppm."""
    rng = random.Random(seed)
    sync = ClockEstimator(period)
    t0 = 5_000_000_000_000  # host ns

    def dev_at(host_ns: float) -> int:
        return int(host_ns / 1000 + offset_us + skew_ppm * 1e-6 * (host_ns - t0) / 1000)

    for i in range(n):
        t_send = t0 + int(i * seconds * 1e9 / n)
        fwd = 60_000 + rng.expovariate(1 / 80_000)  # ns
        turn = rng.randint(10_000, 40_000)
        back = 60_000 + rng.expovariate(1 / 80_000)
        t_rx = dev_at(t_send + fwd)
        ticks = dev_at(t_send + fwd + turn)
        t_recv = int(t_send + fwd + turn + back)
        sync.add_pong(t_send, t_recv, ticks % period, t_rx % period, "synthetic")
    return sync, t0


@pytest.mark.parametrize("period", [2**20, 2**30, 2**62])
def test_fit_recovers_a_40_ppm_drift_and_the_offset(period: int) -> None:
    true_offset = 777_777.0
    sync, t0 = _synthetic(40.0, true_offset, period, seconds=60, n=600)
    m = sync.fit()
    assert m.skew_fitted and m.windows == 10
    assert abs(m.skew_ppm - 40.0) < 3, m
    # the estimate at the reference time, compared with the truth there
    true_at_ref = true_offset + 40e-6 * (m.ref_host_ns - t0) / 1000
    assert abs(ticks_diff_f(m.offset_us, true_at_ref, period)) < 20, m
    if period == SHORT_PERIOD:
        assert sync.wraps >= 50
    # mapping both ways, at the start, middle and end of the run (far from ref on the short period)
    for host_ns in (t0 + 1_000_000, m.ref_host_ns, t0 + 59_000_000_000):
        raw = m.host_to_device_ticks(host_ns)
        assert 0 <= raw < period
        true_raw = int(host_ns / 1000 + true_offset + 40e-6 * (host_ns - t0) / 1000) % period
        assert abs(ticks_diff_f(raw, true_raw, period)) < 30
        assert abs(m.device_to_host_ns(raw, near_host_ns=host_ns + 200_000_000) - host_ns) < 30_000


def test_short_runs_take_no_skew_and_slow_samples_do_not_pull_the_offset() -> None:
    sync, _ = _synthetic(0.0, -1234.0, 2**30, seconds=0.5, n=200)
    # a burst of very slow, lopsided exchanges (say a GC pause on the way back)
    s0 = sync.samples[-1]
    for i in range(40):
        sync.add(SyncSample(s0.t_send_ns + i, s0.t_recv_ns + 20_000_000, s0.dev_ticks_us, s0.dev_rx_us))
    m = sync.fit()
    assert not m.skew_fitted and m.skew_ppm == 0
    assert abs(ticks_diff_f(m.offset_us, -1234, 2**30)) < 20, m
    assert m.n == 240 and m.n_used < 240 // 2


def test_fit_without_samples_says_so() -> None:
    with pytest.raises(ValueError, match="no clock sync samples"):
        ClockEstimator(2**30).fit()


def test_the_error_bound_covers_lopsided_exchanges_where_the_best_sample_alone_would_not() -> None:
    # One fast, symmetric exchange (delay 10 µs) and many slow ones whose delay is all on the way
    # out (each reads the offset 50 µs low); every sample is kept, so the median follows the slow ones.
    sync = ClockEstimator(2**62, keep_fraction=1.0)
    true_offset = 5_000
    sync.add(SyncSample(1_000_000, 1_010_000, 1_005 + true_offset))
    for i in range(1, 20):
        t = 1_000_000 + i * 1_000_000
        sync.add(SyncSample(t, t + 100_000, t // 1000 + 100 + true_offset))
    m = sync.fit()
    err = abs(m.offset_us - true_offset)
    assert err > m.uncertainty_us  # the best sample's half-delay is no bound on the fit
    assert err <= m.error_bound_us == 50.0, m
