"""Facts a report states about its run: when, which firmware, board, broker, clock sync."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from host_harness.broker.facts import BrokerFacts
from host_harness.dut.device import Device
from host_harness.image.firmware_build import sources
from host_harness.measure.clocksync import SyncedClock
from host_harness.paths import FIRMWARE_DIR

Meta = dict[str, str]


def iso_now() -> str:
    """The current time, ISO 8601 in UTC, to the second."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def source_hash(src: Path = FIRMWARE_DIR) -> str:
    """sha256 over the firmware's sources (name and bytes of each firmware/*.py, sorted)."""
    h = hashlib.sha256()
    for p in sources(src):
        h.update(p.name.encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def firmware(dev: Device) -> Meta:
    """Version from the device's ``info``; its hash if it reports one, else one computed here (and said so)."""
    info = dev.info
    out = {"firmware version": str(info.get("version", "unknown"))}
    if info.get("hash"):
        out["firmware hash"] = f"{info['hash']} (reported by the device)"
    elif dev.unix is not None:
        out["firmware hash"] = (
            f"sha256 {source_hash()} of the firmware/*.py sources the host ran "
            f"(as {dev.unix.build_note}; the device reports none)"
        )
    else:
        out["firmware hash"] = (
            f"sha256 {source_hash()} of this checkout's firmware/*.py; the board reports none, "
            "so what it runs is assumed to be what `lightctl deploy` put there"
        )
    return out


def broker(f: BrokerFacts) -> Meta:
    settings = ", ".join(f"{k} {v}" for k, v in f.settings.items())
    return {"broker": f"{f.name} {f.version} on {f.where}", "broker settings": settings or "–"}


def clock(c: SyncedClock) -> Meta:
    return {"clock-sync uncertainty": f"±{c.model.uncertainty_us:.0f} µs", "clock sync": c.describe()}
