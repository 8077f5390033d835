"""Light journeys: a command sent, the light applied, the state confirmed.

A journey is timed on the host clock from the moment the command is handed
to its transport until the confirmation carrying exactly that command's id
arrives back. The device's own timestamps (receipt, pin write, report handed
to the transport) come along in the confirmation.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from typing import Any

from .device import CommandError, Device
from .events import Event
from .mqtt_client import HostMqtt

SIM_HOLD_MS = 50  # firmware/board_unix.py press(): how long the simulated button is held


def ticks_diff(a: int, b: int, period: int) -> int:
    """a - b on a ticks clock of the given period, as MicroPython computes it."""
    half = period // 2
    return ((a - b + half) % period) - half


@dataclass
class Journey:
    kind: str  # "mqtt", "serial" or "button"
    id: str
    seq: int
    state: str
    brightness: int
    src: str
    t_send_ns: int  # host monotonic ns: command handed to the transport
    t_confirm_ns: int  # host monotonic ns: confirmation received
    dev_t_rx: int  # device ticks_us: command received / button edge seen
    dev_t_pin: int  # device ticks_us: output pin written
    dev_t_tx: int  # device ticks_us: report handed to the transport
    ticks_period: int
    t_intended_ns: int | None = None  # open loop: when the schedule meant to send it
    dev_t_sense: int | None = None  # device ticks_us: a sense input saw the light change (boards with one)

    @property
    def e2e_ms(self) -> float:
        """From the intended start (open loop) or the send, to the confirmation."""
        start = self.t_intended_ns if self.t_intended_ns is not None else self.t_send_ns
        return (self.t_confirm_ns - start) / 1e6

    @property
    def rx_to_pin_ms(self) -> float:
        return ticks_diff(self.dev_t_pin, self.dev_t_rx, self.ticks_period) / 1000.0

    @property
    def rx_to_tx_ms(self) -> float:
        return ticks_diff(self.dev_t_tx, self.dev_t_rx, self.ticks_period) / 1000.0

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.update(e2e_ms=self.e2e_ms, rx_to_pin_ms=self.rx_to_pin_ms, rx_to_tx_ms=self.rx_to_tx_ms)
        return d


def journey_from_event(kind: str, cid: str, t_send: int, ev: Event, period: int) -> Journey:
    d = ev.data
    return Journey(
        kind=kind,
        id=cid,
        seq=int(d["seq"]),
        state=str(d["state"]),
        brightness=int(d["brightness"]),
        src=str(d.get("src", "")),
        t_send_ns=t_send,
        t_confirm_ns=ev.host_ns,
        dev_t_rx=int(d["t_rx"]),
        dev_t_pin=int(d["t_pin"]),
        dev_t_tx=int(d["t_tx"]),
        ticks_period=period,
        dev_t_sense=int(d["t_sense"]) if isinstance(d.get("t_sense"), int) else None,
    )


def set_command(state: str | None, brightness: int | None, cid: str) -> dict[str, Any]:
    """A set command's fields: the id, and state and brightness when given."""
    cmd: dict[str, Any] = {"id": cid}
    if state is not None:
        cmd["state"] = state
    if brightness is not None:
        cmd["brightness"] = brightness
    return cmd


class Journeys:
    """Drives journeys against one device, over serial and over MQTT."""

    def __init__(self, device: Device, mqtt: HostMqtt | None = None, timeout: float = 5.0, sub_qos: int = 0) -> None:
        self.device = device
        self.sub_qos = sub_qos
        self.mqtt = mqtt
        self.timeout = timeout
        self._subscribed = False

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
        since = mq.log.cursor
        t = mq.publish(self.topic("set"), json.dumps(set_command(state, brightness, cid)))
        ev = mq.log.wait_for(
            lambda e: e.topic in (state_t, ack_t, error_t) and e.get("id") == cid,
            timeout or self.timeout,
            f"state confirmation of command {cid!r} on {state_t}",
            since,
        )
        if ev.topic == error_t:
            raise CommandError(ev)
        return journey_from_event("mqtt", cid, t, ev, self.period)

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
        since = mq.log.cursor
        last_seq = int(self.device.get().get("seq", 0))
        t, _ack = self.device.request("press", timeout or self.timeout)
        ev = mq.log.wait_for(
            lambda e: e.topic == state_t and e.get("src") == "button" and int(e.get("seq", 0)) > last_seq,
            timeout or self.timeout,
            f"a button state change after seq {last_seq} on {state_t}",
            since,
        )
        j = journey_from_event("button", str(ev.get("id")), t, ev, self.period)
        # The simulated press holds, releases and lets the debouncer re-arm
        # before another press can count: wait for that outside the timing,
        # or the next press would queue behind this one.
        b = self.device.board.get("button") or {}
        time.sleep((SIM_HOLD_MS + int(b.get("debounce_ms", 30)) + 15) / 1000.0)
        return j
