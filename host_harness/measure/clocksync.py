"""Clock sync against a device: ping collectors over serial and MQTT, and the run's clock.

The estimator itself (samples, windows, the fit) is pure and lives in
core.clockmodel; this module feeds it pings from a live device. ``SyncedClock``
is the ClockMap a run uses: synced over serial, re-synced between phases of a
long run. ``unix_clock_truth`` reads the Unix-port device's exact clock offset
to judge an estimate against (core.clocktruth).
"""

from __future__ import annotations

import json
import time
from typing import Any

from host_harness.core.clockmodel import ClockEstimator, ClockModel, SyncSample, int_or_none
from host_harness.core.clocktruth import UNIX_PERIOD, UnixClockTruth
from host_harness.core.events import WaitTimeout
from host_harness.core.ids import IdMaker
from host_harness.dut.device import Device
from host_harness.link.mqtt_client import HostMqtt


class ClockSync(ClockEstimator):
    """A ClockEstimator that collects its own samples by pinging a device."""

    def __init__(self, period: int, **kw: Any) -> None:
        super().__init__(period, **kw)
        self._ids = IdMaker("sync")

    @classmethod
    def for_device(cls, device: Device, **kw: Any) -> ClockSync:
        """A ClockSync for the device's ticks period (from its info)."""
        if "ticks_period" not in device.info:
            device.fetch_info()
        return cls(int(device.info["ticks_period"]), **kw)

    def collect_serial(
        self, device: Device, n: int = 200, interval_s: float = 0.002, timeout: float = 5.0
    ) -> list[SyncSample]:
        """Ping the device ``n`` times over its serial link."""
        out = []
        for _ in range(n):
            t_send, ev = device.ping(timeout)
            out.append(self.add_pong(t_send, ev.host_ns, int(ev.data["ticks"]), int_or_none(ev.get("t_rx")), "serial"))
            if interval_s > 0:
                time.sleep(interval_s)
        return out

    def collect_mqtt(
        self,
        device: Device,
        mqtt: HostMqtt,
        n: int = 200,
        interval_s: float = 0.002,
        timeout: float = 2.0,
        max_lost_fraction: float = 0.2,
    ) -> list[SyncSample]:
        """Ping the device ``n`` times over MQTT: ``<base>/ping`` -> ``<base>/pong``.

        The host subscribes to the pong topic at QoS 0 (QoS 1 would add the
        broker's acknowledgement path, and some brokers delay it). A ping
        unanswered within ``timeout`` counts as lost; too many lost raise.
        """
        device.wait_mqtt()
        ping_topic, pong_topic = f"{device.base}/ping", f"{device.base}/pong"
        mqtt.subscribe(pong_topic, 0)
        out = []
        lost = 0
        for _ in range(n):
            pid = self._ids()
            since = mqtt.log.cursor
            t_send = mqtt.publish(ping_topic, json.dumps({"id": pid}), qos=0)
            try:
                ev = mqtt.log.wait_for(
                    lambda e, pid=pid: e.topic == pong_topic and e.get("id") == pid,
                    timeout,
                    f"the device's pong to MQTT ping {pid!r} on {pong_topic}",
                    since,
                )
            except WaitTimeout:
                lost += 1
                self.lost += 1
                if lost > max(1, n * max_lost_fraction):
                    raise
                continue
            out.append(self.add_pong(t_send, ev.host_ns, int(ev.data["ticks"]), int_or_none(ev.get("t_rx")), "mqtt"))
            if interval_s > 0:
                time.sleep(interval_s)
        return out

    def resync(self, device: Device, n: int = 30, mqtt: HostMqtt | None = None) -> ClockModel:
        """Add ``n`` more samples (over MQTT if ``mqtt`` is given, else serial) and refit over all."""
        if mqtt is None:
            self.collect_serial(device, n)
        else:
            self.collect_mqtt(device, mqtt, n)
        return self.fit()


def sync_serial(device: Device, n: int = 200, sync: ClockSync | None = None, **kw: float) -> ClockSync:
    """Collect ``n`` serial ping samples (into ``sync``, or a new ClockSync for the device)."""
    sync = sync or ClockSync.for_device(device)
    sync.collect_serial(device, n, **kw)
    return sync


def sync_mqtt(device: Device, mqtt: HostMqtt, n: int = 200, sync: ClockSync | None = None, **kw: float) -> ClockSync:
    """Collect ``n`` MQTT ping samples (into ``sync``, or a new ClockSync for the device)."""
    sync = sync or ClockSync.for_device(device)
    sync.collect_mqtt(device, mqtt, n, **kw)
    return sync


# Splits the marker so that the REPL's echo of the line is not taken for the answer.
_TRUTH_LINE = b'import clock; print(\'{"e\' + \'v":"clock","off":%d,"period":%d}\' % (clock.offset(), clock.PERIOD))\r'


def unix_clock_truth(device: Device, timeout: float = 5.0) -> UnixClockTruth:
    """The Unix-port device's clock relative to the host's.

    Without an emulated period (board ``"ticks"`` unset) the device reads the
    host's CLOCK_MONOTONIC directly: the offset is 0 and the device keeps
    running. With one, the offset is read from the device's REPL, which
    stops the firmware (Ctrl-C): call this once the device is no longer
    needed.
    """
    if device.unix is None:
        raise RuntimeError("clock truth is only known for the Unix-port device")
    emulated = device.board.get("ticks") or {}
    if not (emulated.get("period") or emulated.get("start") is not None):
        if "ticks_period" not in device.info:
            device.fetch_info(timeout)
        return UnixClockTruth(0, int(device.info["ticks_period"]))
    device.interrupt(timeout)
    since = device.log.cursor
    device.link.write_raw(_TRUTH_LINE)
    try:
        ev = device.log.wait_for(
            lambda e: e.kind == "clock", timeout, "the REPL to print the device clock's offset", since
        )
    except WaitTimeout as e:
        raise WaitTimeout(f"{e}; console said:\n{device.link.noise_tail()}") from None
    return UnixClockTruth(int(ev.data["off"]), int(ev.data["period"]))


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
            f"uncertainty ±{m.uncertainty_us:.0f} µs (error bound ±{m.error_bound_us:.0f} µs)"
        )
        if self.device.unix is not None and int(self.device.info.get("ticks_period", 0)) == UNIX_PERIOD:
            err = UnixClockTruth().offset_error_us(m)  # no emulated period: the true offset is 0
            text += f"; error vs the Unix port's true offset {err:+.1f} µs"
        return text


def clock_for(dev: Device, mqtt: HostMqtt | None = None) -> tuple[SyncedClock, str]:
    c = SyncedClock(dev, mqtt)
    return c, c.describe()
