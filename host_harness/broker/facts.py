"""What a report says about the broker: name, version, latency-relevant settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import metadata

from host_harness.broker.amqtt import AmqttBroker
from host_harness.broker.bridge import BridgedBrokers
from host_harness.broker.mosquitto import MosquittoBroker, mosquitto_version
from host_harness.broker.running import RunningBroker
from host_harness.core.events import WaitTimeout
from host_harness.link.mqtt_client import HostMqtt

SYS_VERSION_TOPIC = "$SYS/broker/version"


@dataclass
class BrokerFacts:
    name: str
    version: str
    where: str  # redacted URL
    settings: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        s = ", ".join(f"{k} {v}" for k, v in self.settings.items())
        return f"{self.name} {self.version} on {self.where}" + (f" ({s})" if s else "")


def facts(b: RunningBroker, sys_version: str | None = None) -> BrokerFacts:
    """``sys_version``: what an external broker published on $SYS/broker/version, if it did."""
    where = b.info.redacted_url()
    if isinstance(b, BridgedBrokers):
        cloud = facts(b.cloud)
        local = b.local.info.redacted_url() if b.local is not None else "(not started)"
        return BrokerFacts("mosquitto bridge", cloud.version, f"local {local} -> cloud {where}", b.latency_settings())
    if isinstance(b, MosquittoBroker):
        version = (mosquitto_version(b.executable) or "version unknown") + (
            " (tuned)" if b.tuned else " (stock settings)"
        )
        return BrokerFacts("mosquitto", version, where, b.latency_settings())
    if isinstance(b, AmqttBroker):
        try:
            version = metadata.version("amqtt")
        except metadata.PackageNotFoundError:
            version = "version unknown"
        settings = {**b.latency_settings(), "runs": "embedded, in this process", "$SYS": "off"}
        return BrokerFacts("amqtt", version, where, settings)
    version = f"says {sys_version!r} on {SYS_VERSION_TOPIC}" if sys_version else "version unknown"
    return BrokerFacts("external broker", version, where, {"settings": "unknown (not started here)"})


def sys_version(client: HostMqtt, timeout: float = 1.0) -> str | None:
    """The broker's retained $SYS/broker/version, if it publishes one within ``timeout``.

    Mosquitto publishes it (retained) unless ``sys_interval 0``; many brokers do not.
    """
    since = client.log.cursor
    try:
        client.subscribe(SYS_VERSION_TOPIC, timeout=timeout)
        ev = client.log.wait_for(lambda e: e.topic == SYS_VERSION_TOPIC, timeout, SYS_VERSION_TOPIC, since)
    except (WaitTimeout, ConnectionError):
        return None
    finally:
        client.client.unsubscribe(SYS_VERSION_TOPIC)
    payload = ev.get("payload")
    return str(payload) if payload is not None else None
