"""One host MQTT client serving many devices.

One paho client (one network thread) subscribes to ``<base>/+/state``,
``+/ack``, ``+/error``, ``+/pong`` and ``+/availability`` and hands each message to the log of
the device its topic names, and to that device's hooks (called in the
network thread, so a hook can answer at once: a closed loop's next command,
or one light following another). Messages for devices it does not serve
(other devices on a shared broker, other topics) go to the client's own log.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho

from host_harness.broker.info import BrokerInfo
from host_harness.core.events import Event, EventLog
from host_harness.link.mqtt_client import HostMqtt, message_event

LEAVES = ("state", "ack", "error", "pong", "availability")
Hook = Callable[[Event], None]


class FleetMqtt(HostMqtt):
    """A HostMqtt whose device messages are dispatched per device id."""

    def __init__(self, broker: BrokerInfo, base_topic: str = "lightctl", name: str = "fleet", **kw: Any) -> None:
        super().__init__(broker, name, **kw)
        self.base_topic = base_topic
        self.logs: dict[str, EventLog] = {}
        self.hooks: dict[str, list[Hook]] = {}
        self._hooks_lock = threading.Lock()

    def serve(self, device_id: str, keep: int = 2000) -> EventLog:
        """The log of ``device_id``'s messages (made on first call)."""
        log = self.logs.get(device_id)
        if log is None:
            name = f"MQTT {self.broker.redacted_url()} {self.base_topic}/{device_id}"
            log = self.logs[device_id] = EventLog(name, keep)
        return log

    def subscribe_all(self, qos: int = 0) -> None:
        for leaf in LEAVES:
            self.subscribe(f"{self.base_topic}/+/{leaf}", qos)

    def add_hook(self, device_id: str, hook: Hook) -> None:
        with self._hooks_lock:
            self.hooks[device_id] = [*self.hooks.get(device_id, []), hook]

    def remove_hook(self, device_id: str, hook: Hook) -> None:
        with self._hooks_lock:
            self.hooks[device_id] = [h for h in self.hooks.get(device_id, []) if h is not hook]

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        now = time.monotonic_ns()
        ev = message_event(msg, now)
        parts = msg.topic.split("/")
        log = None
        if len(parts) == 3 and parts[0] == self.base_topic:
            log = self.logs.get(parts[1])
        if log is None:
            self.log.add(ev)
            return
        log.add(ev)
        for hook in self.hooks.get(parts[1], ()):
            hook(ev)


class DeviceView:
    """One device's slice of a FleetMqtt, shaped like a HostMqtt for measure.journeys.Journeys:
    its own log, publishing through the shared client, subscriptions already made."""

    def __init__(self, fleet: FleetMqtt, device_id: str) -> None:
        self.fleet = fleet
        self.log = fleet.serve(device_id)
        self.client_id = fleet.client_id

    def subscribe(self, topic: str, qos: int = 0, timeout: float = 10.0) -> None:
        """Already subscribed by the fleet's wildcards (a topic outside them is subscribed for real)."""
        parts = topic.split("/")
        if len(parts) == 3 and parts[0] == self.fleet.base_topic and parts[2] in LEAVES:
            return
        self.fleet.subscribe(topic, qos, timeout)

    def publish(self, topic: str, payload: str | bytes, qos: int = 0, retain: bool = False) -> int:
        return self.fleet.publish(topic, payload, qos, retain)
