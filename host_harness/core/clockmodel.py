"""Clock synchronisation, the pure part: ping samples -> a model mapping device ticks to host time.

The device stamps events with its ``ticks_us`` clock, which counts modulo a
period (``ticks_period`` in its info: 2**30 µs ≈ 17.9 min on an ESP32,
2**62 on the Unix port unless the board emulates a shorter one). The host
stamps everything with ``time.monotonic_ns()``. This module estimates the
mapping between the two from ping exchanges, NTP style:

* the host sends a ping at ``t_send`` (host ns) and receives the pong at
  ``t_recv``; the pong carries the device's ``t_rx`` (ticks when the ping
  arrived) and ``ticks`` (ticks taken just before the pong was written);
* the device's stamps are taken to lie at the middle of the exchange, so
  ``offset = device_us - host_us`` is estimated as ``(t_rx + ticks)/2 -
  (t_send + t_recv)/2`` (or ``ticks - midpoint`` when ``t_rx`` is missing),
  give or take half the network delay ``(RTT - (ticks - t_rx)) / 2``;
* slow exchanges are the ones most likely to be lopsided, so only the
  fastest ``keep_fraction`` of the samples in each time window count;
* the device crystal drifts (tens of ppm on a board), so the offset is
  fitted as a straight line against host time (least squares over one point
  per window) when the samples span long enough; the slope is the skew.

Typical use (the collectors live in measure.clocksync)::

    sync = sync_serial(device, n=200)          # or sync_mqtt(device, mqtt, n=200)
    model = sync.fit()
    t_host_ns = model.device_to_host_ns(ev.get("t_rx"), near_host_ns=ev.host_ns)
    ...
    model = sync.resync(device)                # a few more samples later on; refit over all

Raw device ticks are unwrapped (made monotonic, adding the period at each
wrap) before fitting; the model maps any raw ticks value back by choosing
the wrap count that lands nearest to its prediction, so a raw value maps
correctly when it was taken within half a period of ``near_host_ns`` (by
default the middle of the sync samples).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from host_harness.core.ticks import Unwrapper, nearest_unwrap, ticks_diff, ticks_diff_f


@dataclass(frozen=True)
class SyncSample:
    """One ping exchange, on both clocks.

    Host times are ``time.monotonic_ns()``; device times are unwrapped
    ``ticks_us`` (see Unwrapper), so they only mean something relative to
    other samples unwrapped the same way.
    """

    t_send_ns: int  # host: ping handed to the transport
    t_recv_ns: int  # host: pong received
    dev_ticks_us: int  # device: ticks just before the pong was written (unwrapped)
    dev_rx_us: int | None = None  # device: ticks when the ping arrived (unwrapped), if reported
    via: str = ""  # "serial" or "mqtt"

    @property
    def rtt_ns(self) -> int:
        return self.t_recv_ns - self.t_send_ns

    @property
    def turnaround_us(self) -> int:
        """Time the device held the ping (0 when it did not report t_rx)."""
        return 0 if self.dev_rx_us is None else max(0, self.dev_ticks_us - self.dev_rx_us)

    @property
    def delay_us(self) -> float:
        """Time on the wires and in the stacks, both ways: RTT minus the device's turnaround."""
        return max(0.0, self.rtt_ns / 1000 - self.turnaround_us)

    @property
    def host_mid_us(self) -> float:
        return (self.t_send_ns + self.t_recv_ns) / 2000

    @property
    def dev_mid_us(self) -> float:
        return self.dev_ticks_us if self.dev_rx_us is None else (self.dev_ticks_us + self.dev_rx_us) / 2

    @property
    def offset_us(self) -> float:
        """Estimated device_us - host_us at this exchange."""
        return self.dev_mid_us - self.host_mid_us

    @property
    def uncertainty_us(self) -> float:
        """Bound on this sample's offset error if nothing happened out of order: half the delay."""
        return self.delay_us / 2


@dataclass(frozen=True)
class ClockModel:
    """device_us = host_us + offset_us + skew_ppm * 1e-6 * (host_us - ref_host_us).

    ``offset_us`` is in unwrapped device units: only its value modulo
    ``period`` relates to raw ticks (see ``wrapped_offset_us``).
    """

    ref_host_ns: int  # reference host time: the mean host time of the samples used
    offset_us: float  # device_us - host_us at ref_host_ns
    skew_ppm: float  # device clock rate relative to the host's, minus one, in ppm
    period: int  # device ticks period
    n: int  # samples offered
    n_used: int  # samples kept (the fastest of each window)
    windows: int  # time windows the samples fell into
    skew_fitted: bool  # False: too short a span or too few windows, skew taken as 0 (or the prior)
    skew_stderr_ppm: float  # standard error of the skew (nan unless fitted over >= 3 windows)
    span_s: float  # host time from the first to the last sample
    rtt_min_us: float
    rtt_median_us: float
    residual_rms_us: float  # kept samples' offsets around the fitted line
    uncertainty_us: float  # half the smallest delay: the error bound of the best sample
    # Bound on the fitted offset's error at the samples' times: every kept sample's true offset lies
    # within its own uncertainty (half its delay), so their median lies within the largest of those
    # (plus the skew correction applied to them, when fitted; assumes the clock keeps the fitted rate).
    error_bound_us: float = math.nan

    @property
    def ref_device_us(self) -> float:
        return self.ref_host_ns / 1000 + self.offset_us

    @property
    def wrapped_offset_us(self) -> float:
        """offset_us reduced to -period/2 .. period/2."""
        return ticks_diff_f(self.offset_us, 0, self.period)

    def offset_at(self, host_ns: int) -> float:
        """device_us - host_us at the given host time (unwrapped device units)."""
        return self.offset_us + self.skew_ppm * 1e-6 * (host_ns - self.ref_host_ns) / 1000

    def predict_device_us(self, host_ns: int) -> float:
        """Unwrapped device ticks at the given host time."""
        return host_ns / 1000 + self.offset_at(host_ns)

    def host_to_device_ticks(self, host_ns: int) -> int:
        """The raw device ticks value (0..period-1) at the given host time."""
        return round(self.predict_device_us(host_ns)) % self.period

    def unwrap(self, raw: int, near_host_ns: int | None = None) -> int:
        """Raw device ticks unwrapped to the count nearest the prediction at ``near_host_ns``."""
        near = self.ref_host_ns if near_host_ns is None else near_host_ns
        return nearest_unwrap(int(raw) % self.period, self.predict_device_us(near), self.period)

    def device_to_host_ns(self, raw: int, near_host_ns: int | None = None) -> int:
        """Host monotonic ns at which the device's clock read ``raw``.

        ``raw`` may be wrapped (0..period-1) or already unwrapped; it is
        placed at the wrap count nearest to the model's prediction at
        ``near_host_ns`` (default: the middle of the sync samples), so it
        must have been taken within half a period of that time. For a
        device timestamp carried by an event, pass the event's arrival time.
        """
        dev = self.unwrap(raw, near_host_ns)
        host_us = self.ref_host_ns / 1000 + (dev - self.ref_device_us) / (1 + self.skew_ppm * 1e-6)
        return round(host_us * 1000)


@dataclass
class _Window:
    samples: list[SyncSample]

    def fastest(self, fraction: float) -> list[SyncSample]:
        k = max(1, math.ceil(len(self.samples) * fraction))
        return sorted(self.samples, key=lambda s: s.delay_us)[:k]


class ClockEstimator:
    """Collects ping samples over time and fits a ClockModel to them.

    ``keep_fraction``: share of each window's samples (the lowest delay ones)
    used. ``max_windows``: the samples' span is cut into this many equal
    time windows (empty ones dropped). Skew is fitted when there are at
    least ``min_skew_windows`` windows over at least ``min_skew_span_s``;
    otherwise ``prior_skew_ppm`` is used. ``use_device_rx``: use the
    device's receive stamp (NTP style) when the pong carries one; False
    takes the pong's ``ticks`` alone as the midpoint (Cristian style).
    """

    def __init__(
        self,
        period: int,
        keep_fraction: float = 0.25,
        max_windows: int = 10,
        min_skew_windows: int = 2,
        min_skew_span_s: float = 2.0,
        prior_skew_ppm: float = 0.0,
        use_device_rx: bool = True,
    ) -> None:
        if not 0 < keep_fraction <= 1:
            raise ValueError(f"keep_fraction must be in (0, 1], got {keep_fraction}")
        self.period = period
        self.keep_fraction = keep_fraction
        self.max_windows = max(1, max_windows)
        self.min_skew_windows = max(2, min_skew_windows)
        self.min_skew_span_s = min_skew_span_s
        self.prior_skew_ppm = prior_skew_ppm
        self.use_device_rx = use_device_rx
        self.samples: list[SyncSample] = []
        self.lost = 0  # pings that got no answer in time
        self.model: ClockModel | None = None  # the latest fit
        self._unwrapper = Unwrapper(period)

    # -- samples ---------------------------------------------------------------
    def add(self, sample: SyncSample) -> SyncSample:
        """Add a sample whose device times are already unwrapped consistently with the others."""
        if sample.t_recv_ns < sample.t_send_ns:
            raise ValueError(f"pong received before the ping was sent: {sample}")
        if not self.use_device_rx and sample.dev_rx_us is not None:
            sample = SyncSample(sample.t_send_ns, sample.t_recv_ns, sample.dev_ticks_us, None, sample.via)
        self.samples.append(sample)
        return sample

    def add_pong(
        self, t_send_ns: int, t_recv_ns: int, ticks: int, t_rx: int | None = None, via: str = ""
    ) -> SyncSample:
        """Add an exchange from raw device ticks; unwraps them.

        The anchor for unwrapping is the previous sample moved on by the host
        time elapsed since, so gaps between re-syncs may exceed half a period.
        """
        expected = None
        if self.samples:
            prev = self.samples[-1]
            expected = prev.dev_ticks_us + (t_recv_ns - prev.t_recv_ns) / 1000
        dev = self._unwrapper.feed(int(ticks), expected)
        rx = None if t_rx is None else dev + ticks_diff(int(t_rx), int(ticks), self.period)
        return self.add(SyncSample(t_send_ns, t_recv_ns, dev, rx, via))

    @property
    def wraps(self) -> int:
        """Device ticks wraps seen between the samples added with add_pong."""
        return self._unwrapper.wraps

    # -- fitting ---------------------------------------------------------------
    def windows(self, samples: Sequence[SyncSample] | None = None) -> list[list[SyncSample]]:
        """The samples cut into equal host-time windows across their span (empty ones dropped)."""
        ss = sorted(self.samples if samples is None else samples, key=lambda s: s.host_mid_us)
        if not ss:
            return []
        t0, t1 = ss[0].host_mid_us, ss[-1].host_mid_us
        width = (t1 - t0) / self.max_windows
        bins: dict[int, list[SyncSample]] = {}
        for s in ss:
            i = min(self.max_windows - 1, int((s.host_mid_us - t0) / width)) if width > 0 else 0
            bins.setdefault(i, []).append(s)
        return [bins[i] for i in sorted(bins)]

    def fit(self, since_host_ns: int | None = None) -> ClockModel:
        """Fit offset and skew to the samples (those received after ``since_host_ns``, if given)."""
        samples = [s for s in self.samples if since_host_ns is None or s.t_send_ns >= since_host_ns]
        if not samples:
            raise ValueError("no clock sync samples to fit")
        wins = [_Window(w) for w in self.windows(samples)]
        kept_by_win = [w.fastest(self.keep_fraction) for w in wins]
        kept = [s for k in kept_by_win for s in k]
        ref_us = statistics.fmean(s.host_mid_us for s in kept)
        span_s = (max(s.host_mid_us for s in samples) - min(s.host_mid_us for s in samples)) / 1e6

        # One point per window: the median offset of its fastest samples.
        points = [
            (statistics.fmean(s.host_mid_us for s in k) - ref_us, statistics.median(s.offset_us for s in k))
            for k in kept_by_win
        ]
        skew, skew_err, fitted = self.prior_skew_ppm * 1e-6, math.nan, False
        if len(points) >= self.min_skew_windows and span_s >= self.min_skew_span_s:
            skew, skew_err = _slope(points)
            fitted = True

        corrected = [s.offset_us - skew * (s.host_mid_us - ref_us) for s in kept]
        offset = statistics.median(corrected)
        residuals = [c - offset for c in corrected]
        rtts = [s.rtt_ns / 1000 for s in samples]
        bound = max(s.uncertainty_us + abs(skew * (s.host_mid_us - ref_us)) for s in kept)
        self.model = ClockModel(
            ref_host_ns=round(ref_us * 1000),
            offset_us=offset,
            skew_ppm=skew * 1e6,
            period=self.period,
            n=len(samples),
            n_used=len(kept),
            windows=len(wins),
            skew_fitted=fitted,
            skew_stderr_ppm=skew_err * 1e6,
            span_s=span_s,
            rtt_min_us=min(rtts),
            rtt_median_us=statistics.median(rtts),
            residual_rms_us=math.sqrt(statistics.fmean(r * r for r in residuals)),
            uncertainty_us=min(s.uncertainty_us for s in samples),
            error_bound_us=bound,
        )
        return self.model


def _slope(points: Iterable[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares slope of y on x, and its standard error (nan with fewer than 3 points)."""
    pts = list(points)
    mx = statistics.fmean(x for x, _ in pts)
    my = statistics.fmean(y for _, y in pts)
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    if sxx <= 0:
        return 0.0, math.nan
    slope = sum((x - mx) * (y - my) for x, y in pts) / sxx
    if len(pts) < 3:
        return slope, math.nan
    sse = sum((y - my - slope * (x - mx)) ** 2 for x, y in pts)
    return slope, math.sqrt(sse / (len(pts) - 2) / sxx)


def int_or_none(v: object) -> int | None:
    return None if v is None else int(v)  # type: ignore[call-overload]
