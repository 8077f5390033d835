"""The Unix-port device clock exactly: the one reference to judge clock estimates against.

The Unix port's ``ticks_us`` reads the host's CLOCK_MONOTONIC, shifted by an
offset when the board emulates a shorter ticks period. ``UnixClockTruth``
maps device ticks onto the host clock from that knowledge (a ClockMap), and
says how far an estimated ClockModel is from it.
"""

from __future__ import annotations

from dataclasses import dataclass

from host_harness.core.clockmodel import ClockModel
from host_harness.core.ticks import nearest_unwrap, ticks_diff_f

UNIX_PERIOD = 2**62  # ticks period of the Unix port without an emulated one


@dataclass(frozen=True)
class UnixClockTruth:
    """The Unix-port device clock exactly: raw = (host_ns // 1000 + offset_us) mod period."""

    offset_us: int = 0
    period: int = UNIX_PERIOD

    @property
    def true_offset_us(self) -> float:
        """device_us - host_us (host_us = host_ns / 1000): ticks truncate, so half a µs less."""
        return self.offset_us - 0.5

    def device_to_host_ns(self, raw: int, near_host_ns: int | None = None) -> int:
        """The middle of the host microsecond in which the device read ``raw``.

        With ``near_host_ns``, the wrap count nearest that time; without, ``raw`` is taken as unwrapped.
        """
        native = raw - self.offset_us
        if near_host_ns is not None:
            native = nearest_unwrap(native % self.period, near_host_ns / 1000, self.period)
        return native * 1000 + 500

    def offset_error_us(self, model: ClockModel) -> float:
        """The model's offset minus the true one, at the model's reference time, modulo the period."""
        return ticks_diff_f(model.offset_us - self.true_offset_us, 0, self.period)
