"""What a report says about the broker: name, version, latency-relevant settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import metadata

from host_harness.broker.amqtt import AmqttBroker
from host_harness.broker.mosquitto import MosquittoBroker, mosquitto_version
from host_harness.broker.running import RunningBroker
from host_harness.core.events import WaitTimeout
from host_harness.link.mqtt_client import HostMqtt

# mosquitto.conf keys that change how soon a small message goes out or how many
# wait; what stock Mosquitto does when a key is absent (mosquitto.conf(5)).
MOSQUITTO_LATENCY_KEYS = {
    "set_tcp_nodelay": "false",
    "max_inflight_messages": "20",
    "max_queued_messages": "1000",
    "persistence": "false",
    "autosave_interval": "1800",
    "sys_interval": "10",
}

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


def _mosquitto(b: MosquittoBroker) -> BrokerFacts:
    settings = {}
    conf = b.tmpdir / b.CONF_NAME if b.tmpdir is not None else None
    given: dict[str, str] = {}
    if conf is not None and conf.exists():
        for line in conf.read_text().splitlines():
            key, _, value = line.strip().partition(" ")
            if key in MOSQUITTO_LATENCY_KEYS:
                given[key] = value.strip()
    for key, stock in MOSQUITTO_LATENCY_KEYS.items():
        settings[key] = given.get(key, f"{stock} (stock)")
    version = mosquitto_version(b.executable) or "version unknown"
    return BrokerFacts("mosquitto", version, b.info.redacted_url(), settings)


def _amqtt(b: AmqttBroker) -> BrokerFacts:
    try:
        version = metadata.version("amqtt")
    except metadata.PackageNotFoundError:
        version = "version unknown"
    settings = {"TCP_NODELAY": "on (set by the harness)", "runs": "in this process, its own thread", "$SYS": "off"}
    return BrokerFacts("amqtt", version, b.info.redacted_url(), settings)


def facts(b: RunningBroker, sys_version: str | None = None) -> BrokerFacts:
    """``sys_version``: what an external broker published on $SYS/broker/version, if it did."""
    if isinstance(b, MosquittoBroker):
        return _mosquitto(b)
    if isinstance(b, AmqttBroker):
        return _amqtt(b)
    version = f"says {sys_version!r} on {SYS_VERSION_TOPIC}" if sys_version else "version unknown"
    return BrokerFacts("external broker", version, b.info.redacted_url(), {"settings": "unknown (not started here)"})


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
