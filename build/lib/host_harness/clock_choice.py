"""The clock that maps device ticks onto the host clock for a run.

Clock sync over the serial link (pings; offset from the fastest round trips,
drift from a fit over the run), re-synced between phases of a long run. On
the Unix port without emulated wraps the true offset is 0, and the sync's
error against it is reported.
"""

from __future__ import annotations

import time

from .clocksync import ClockModel, ClockSync
from .device import Device
from .mqtt_client import HostMqtt

SYNC_PINGS = 200
RESYNC_PINGS = 50


class SyncedClock:
    """A ClockMap backed by a ClockSync that can be topped up during a run."""

    def __init__(self, device: Device, mqtt: HostMqtt | None = None, pings: int = SYNC_PINGS) -> None:
        self.device = device
        self.mqtt = mqtt
        self.sync = ClockSync(int(device.info.get("ticks_period") or 2**30))
        self.sync.collect_serial(device, pings)
        self.model: ClockModel = self.sync.fit()

    def resync(self, pings: int = RESYNC_PINGS) -> ClockModel:
        self.model = self.sync.resync(self.device, pings)
        return self.model

    def device_to_host_ns(self, ticks: int, near_host_ns: int | None = None) -> int:
        return self.model.device_to_host_ns(ticks, near_host_ns)

    def describe(self) -> str:
        m = self.model
        text = (
            f"synced over serial: {m.n_used} of {m.n} pings kept, round trip min {m.rtt_min_us:.0f} µs, "
            f"skew {m.skew_ppm:+.1f} ppm{'' if m.skew_fitted else ' (not fitted yet)'}, "
            f"uncertainty ±{m.uncertainty_us:.0f} µs"
        )
        if self.device.unix is not None and int(self.device.info.get("ticks_period", 0)) == 2**62:
            err = m.offset_at(time.monotonic_ns())  # the true offset is 0 on the Unix port
            text += f"; error vs the Unix port's true offset {err:+.1f} µs"
        return text


def clock_for(dev: Device, mqtt: HostMqtt | None = None) -> tuple[SyncedClock, str]:
    c = SyncedClock(dev, mqtt)
    return c, c.describe()
