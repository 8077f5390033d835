"""Drive light journeys against one device: set commands over MQTT and serial, button presses.

Each call sends one command, waits for the confirmation carrying its id and
returns a core.journey.Journey.
"""

from __future__ import annotations

import json

from host_harness.core.journey import Journey, journey_from_event, set_command
from host_harness.dut.device import CommandError, Device
from host_harness.link.mqtt_client import HostMqtt
from host_harness.measure.taps import Taps


class Journeys:
    """Drives journeys against one device, over serial and over MQTT."""

    def __init__(self, device: Device, mqtt: HostMqtt | None = None, timeout: float = 5.0, sub_qos: int = 0) -> None:
        self.device = device
        self.sub_qos = sub_qos
        self.mqtt = mqtt
        self.timeout = timeout
        self._subscribed = False
        self.taps: Taps | None = None  # subscribed taps split the network hops at each broker

    def tap_marks(self) -> list[int]:
        return self.taps.marks() if self.taps is not None and self.taps.active else []

    def tapped(self, j: Journey, marks: list[int], command: bool = True) -> Journey:
        if self.taps is not None and marks:
            self.taps.stamp(j, marks, self.device.base, command)
        return j

    @property
    def period(self) -> int:
        return int(self.device.info.get("ticks_period") or 2**30)

    def topic(self, leaf: str) -> str:
        return f"{self.device.base}/{leaf}"

    def _need_mqtt(self) -> HostMqtt:
        if self.mqtt is None:
            raise RuntimeError("this journey needs MQTT, and no broker was given")
        if not self._subscribed:
            for leaf in ("state", "ack", "error", "availability", "pong"):
                self.mqtt.subscribe(self.topic(leaf), qos=self.sub_qos)
            self._subscribed = True
        return self.mqtt

    def via_mqtt(
        self,
        state: str | None = None,
        brightness: int | None = None,
        cmd_id: str | None = None,
        timeout: float | None = None,
    ) -> Journey:
        """Publish a command on .../set; wait for .../state with its id (or, for
        an id the device has seen before, its original event on .../ack)."""
        mq = self._need_mqtt()
        cid = cmd_id or self.device.ids()
        state_t, error_t, ack_t = self.topic("state"), self.topic("error"), self.topic("ack")
        since, marks = mq.log.cursor, self.tap_marks()
        t = mq.publish(self.topic("set"), json.dumps(set_command(state, brightness, cid)))
        ev = mq.log.wait_for(
            lambda e: e.topic in (state_t, ack_t, error_t) and e.get("id") == cid,
            timeout or self.timeout,
            f"state confirmation of command {cid!r} on {state_t}",
            since,
        )
        if ev.topic == error_t:
            raise CommandError(ev)
        return self.tapped(journey_from_event("mqtt", cid, t, ev, self.period), marks)

    def via_serial(
        self,
        state: str | None = None,
        brightness: int | None = None,
        cmd_id: str | None = None,
        timeout: float | None = None,
    ) -> Journey:
        """Send a set command over the serial link; wait for its change event."""
        cid = cmd_id or self.device.ids()
        fields = set_command(state, brightness, cid)
        t, ev = self.device.request("set", timeout or self.timeout, **fields)
        return journey_from_event("serial", cid, t, ev, self.period)

    def button(self, timeout: float | None = None) -> Journey:
        """Press the button (over serial); wait for the new state on MQTT."""
        mq = self._need_mqtt()
        state_t = self.topic("state")
        since, marks = mq.log.cursor, self.tap_marks()
        last_seq = int(self.device.get().get("seq", 0))
        console = self.device.log.cursor
        t, _ack = self.device.request("press", timeout or self.timeout)
        ev = mq.log.wait_for(
            lambda e: e.topic == state_t and e.get("src") == "button" and int(e.get("seq", 0)) > last_seq,
            timeout or self.timeout,
            f"a button state change after seq {last_seq} on {state_t}",
            since,
        )
        j = self.tapped(journey_from_event("button", str(ev.get("id")), t, ev, self.period), marks, command=False)
        # The simulated press holds, releases and lets the debouncer re-arm
        # before another press can count: wait for that ("released" on the
        # console) outside the timing, or the next press would queue behind this one.
        self.device.log.wait_for(
            lambda e: e.kind == "released", timeout or self.timeout, "the button's release after the press", console
        )
        return j
