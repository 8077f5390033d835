"""Put a run behind a packet-level link: the broker listens on the link, the device sits behind it.

The harness's Mosquitto keeps its loopback listener (the host's clients use
it) and gets a second listener on the link's broker-side address; the
Unix-port device runs inside the link's device namespace and is configured
with that address. Used by ``lightctl run --link``, the pytest plugin's
``--lightctl-link`` and the benchmarks.
"""

from __future__ import annotations

from typing import Any

from host_harness.broker.info import KIND_MOSQUITTO, KIND_MOSQUITTO_TUNED, BrokerInfo
from host_harness.broker.mosquitto import find_mosquitto
from host_harness.broker.running import RunningBroker, free_port
from host_harness.core.diagnose import batching as diagnose_batching
from host_harness.core.results import JourneyRun
from host_harness.dut.device import Device
from host_harness.link.mqtt_client import HostMqtt

from . import packetlog
from .links import PROFILES, Link, LinkError, profile, unavailable_reason

__all__ = [
    "PROFILES",
    "Link",
    "LinkError",
    "batching",
    "broker_options",
    "device_broker",
    "open_link",
    "profile",
    "together",
    "unavailable_reason",
    "wait_across",
]


def open_link(name: str, seed: int | None = None, log: bool = False) -> Link:
    """A link of profile ``name``, up. ValueError for an unknown name, LinkError when it cannot be made.
    ``log``: the delay forwarder records each packet carrying data (``Link.packets``)."""
    prof = profile(name)
    reason = unavailable_reason()
    if reason:
        raise LinkError(f"--link {name}: {reason}")
    return Link(prof, seed=seed, log=log).up()


def broker_options(link: Link | None, broker: str | None) -> dict[str, Any]:
    """``start_broker`` options that add a listener on the link (none without a link)."""
    if link is None:
        return {}
    if broker is not None and broker.strip().lower() not in (KIND_MOSQUITTO, KIND_MOSQUITTO_TUNED):
        raise ValueError(
            f"--link needs the harness's own Mosquitto (--broker mosquitto, mosquitto-tuned or none), not {broker!r}"
        )
    if find_mosquitto() is None:
        raise ValueError("--link needs Mosquitto installed (the embedded amqtt cannot listen on the link)")
    link.broker_port = free_port(link.broker_ip)
    return {"extra_config": [f"listener {link.broker_port} {link.broker_ip}"]}


def device_config(link: Link | None) -> dict[str, Any]:
    """Device options a link implies: the Wi-Fi power save it emulates (``max``
    for a radio that sleeps between beacons, else ``none``), which the Unix-port
    device reports as ``wifi_pm`` in its info."""
    if link is None:
        return {}
    return {"wifi": {"pm": "max" if link.profile.wake_ms else "none"}}


def device_broker(link: Link | None, broker: RunningBroker) -> BrokerInfo:
    """How the device reaches the broker: across the link when there is one."""
    if link is None:
        return broker.info
    i = broker.info
    return BrokerInfo.local(i.kind, link.broker_port, host=link.broker_ip, username=i.username, password=i.password)


def wait_across(dev: Device, mq: HostMqtt, timeout: float = 10.0) -> None:
    """Wait until the device's subscriptions have reached the broker across the link.

    The device reports its MQTT link up once its SUBSCRIBE is written, not
    acknowledged; on a slow link a command sent at once would reach the broker
    first and find no subscriber. Its 'online' is published after the
    SUBSCRIBE on the same connection, so once the broker passes it on, the
    subscriptions are in place.
    """
    topic = f"{dev.base}/availability"
    mq.subscribe(topic)
    mq.log.wait_for(
        lambda e: e.topic == topic and e.get("payload") == "online",
        timeout,
        f"the device's 'online' on {topic} (its subscriptions across the link)",
        0,
    )


def together(link: Link, runs: list[JourneyRun]) -> packetlog.Together | None:
    """How the MQTT commands of ``runs`` crossed the link towards the device (``packetlog.together``),
    from the link's packet record; None without a record (a link that delays nothing keeps none) or
    without MQTT journeys."""
    if link.packets is None:
        return None
    ids = [j.id for r in runs if r.kind == "mqtt" for j in r.journeys]
    if not ids:
        return None
    return packetlog.together(link.packets.read(), [packetlog.quoted(i) for i in ids])


def batching(link: Link, runs: list[JourneyRun]) -> str | None:
    """The doctor's line when the broker sent some of the commands of ``runs`` together, else a
    line saying each went on its own; None when ``together`` has nothing to say."""
    t = together(link, runs)
    if t is None:
        return None
    d = diagnose_batching(*t)
    if d is not None:
        return d.line()
    return f"each of {t.seen} commands crossed towards the device in a TCP segment of its own"
