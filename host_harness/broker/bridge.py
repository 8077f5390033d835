"""A bridged path as homes run it: a local Mosquitto bridged to a second, "cloud" Mosquitto.

The device connects to the local broker; the host (the app, the voice
assistant) publishes and listens at the cloud broker; the local broker's
bridge carries ``<prefix>/#`` both ways at QoS 1 (Mosquitto's bridge
settings: ``bridge_protocol_version mqttv311``, ``cleansession true``,
``try_private true``), Mosquitto's stock latency settings otherwise.

    with BridgedBrokers(find_mosquitto()).start() as path:
        dev = open_device(broker=path.local.info)     # the device at home
        host = HostMqtt(path.info)                     # the host in the cloud

``via(host, port) -> (host, port)`` lets a caller put something (a fault
proxy) on the bridge link: the local broker connects to what it returns.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable

from host_harness.broker.info import BrokerInfo
from host_harness.broker.mosquitto import MosquittoBroker
from host_harness.broker.running import START_TIMEOUT, RunningBroker
from host_harness.core.events import WaitTimeout
from host_harness.link.mqtt_client import HostMqtt

BRIDGE_NAME = "cloud"
DEFAULT_PREFIX = "lightctl"
PROBE_EVERY_S = 0.2  # a probe published before the bridge subscribed is lost: publish again this often

Via = Callable[[str, int], tuple[str, int]]


def bridge_config(prefix: str, host: str, port: int) -> list[str]:
    """mosquitto.conf lines for the local broker: a bridge to the cloud broker at ``host:port``."""
    return [
        f"connection {BRIDGE_NAME}",
        f"address {host}:{port}",
        f"topic {prefix}/# both 1",
        "bridge_protocol_version mqttv311",
        "cleansession true",
        "try_private true",
        "notifications false",
        "restart_timeout 1",
    ]


class BridgedBrokers(RunningBroker):
    """Two stock (or tuned) Mosquittos: ``local`` bridged to ``cloud``; ``info`` is the cloud's (the host's)."""

    def __init__(
        self, executable: str, *, tuned: bool = False, prefix: str = DEFAULT_PREFIX, via: Via | None = None
    ) -> None:
        self.prefix = prefix.rstrip("/")
        self.via = via
        self.cloud = MosquittoBroker(executable, tuned=tuned)
        self.local: MosquittoBroker | None = None
        self._executable, self._tuned = executable, tuned
        self.info = self.cloud.info

    @property
    def device_info(self) -> BrokerInfo:
        """Where the device connects: the local broker."""
        if self.local is None:
            raise RuntimeError("the bridged brokers are not started; call start() first")
        return self.local.info

    def start(self, timeout: float = START_TIMEOUT) -> BridgedBrokers:
        """Start the cloud broker, then the local one bridged to it; return once the bridge carries
        a probe both ways (RuntimeError naming the direction otherwise)."""
        try:
            self.cloud.start()
            self.info = self.cloud.info
            host, port = self.cloud.info.address
            if self.via is not None:
                host, port = self.via(host, port)
            self.local = MosquittoBroker(
                self._executable, tuned=self._tuned, extra_config=bridge_config(self.prefix, host, port)
            ).start()
            self.wait_bridged(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_bridged(self, timeout: float = START_TIMEOUT) -> None:
        """Until a probe published at each broker arrives at the other one."""
        assert self.local is not None
        cloud = HostMqtt(self.cloud.info, "bridge-cloud").connect()
        local = HostMqtt(self.local.info, "bridge-local").connect()
        try:
            for src, dst, what in ((cloud, local, "cloud -> local"), (local, cloud, "local -> cloud")):
                self._probe(src, dst, what, timeout)
        except WaitTimeout as e:
            tail = self.local.log_tail(10)
            raise RuntimeError(f"the bridge did not come up: {e}; local broker's log:\n{tail}") from None
        finally:
            cloud.close()
            local.close()

    def _probe(self, src: HostMqtt, dst: HostMqtt, what: str, timeout: float) -> None:
        topic = f"{self.prefix}/_bridge/{dst.client_id}"
        dst.subscribe(topic)
        deadline = time.monotonic() + timeout
        for n in itertools.count():
            since = dst.log.cursor
            src.publish(topic, f'{{"id": "probe-{n}"}}', qos=1)
            left = deadline - time.monotonic()
            if left <= 0:
                raise WaitTimeout(f"timed out after {timeout:g} s waiting for a probe to cross the bridge {what}")
            try:
                dst.log.wait_for(lambda e: e.topic == topic, min(PROBE_EVERY_S, left), f"probe {what}", since)
                return
            except WaitTimeout:
                continue  # the bridge had not subscribed yet: the probe was dropped, send another

    @property
    def running(self) -> bool:
        return self.cloud.running and self.local is not None and self.local.running

    def latency_settings(self) -> dict[str, str]:
        return {
            **self.cloud.latency_settings(),
            "bridge": f"topic {self.prefix}/# both 1, mqttv311, cleansession true, try_private true",
        }

    def describe(self) -> str:
        local = self.local.info.redacted_url() if self.local is not None else "(not started)"
        return f"bridged: local {local} -> cloud {self.cloud.describe()}; bridge topic {self.prefix}/# both 1"

    def stop(self) -> None:
        if self.local is not None:
            self.local.stop()
        self.cloud.stop()

    def restart(self) -> None:
        raise RuntimeError("the bridged brokers cannot be restarted as one; restart .local or .cloud")


def device_side(b: RunningBroker) -> BrokerInfo:
    """Where a device connects: the local broker of a bridged path, else the broker itself."""
    return b.device_info if isinstance(b, BridgedBrokers) else b.info
