"""Which clock maps device ticks onto the host clock for a run."""

from __future__ import annotations

from .device import Device
from .hops import ClockMap, UnixTruthClock
from .mqtt_client import HostMqtt


def clock_for(dev: Device, mqtt: HostMqtt | None = None) -> tuple[ClockMap, str]:
    """Clock sync over serial; the Unix port's known truth is used to check it."""
    if dev.unix is not None and int(dev.info.get("ticks_period", 0)) == 2**62:
        return UnixTruthClock(), "Unix port: device ticks_us is the host's CLOCK_MONOTONIC (exact)"
    raise RuntimeError("clock sync for this device is not available yet")
