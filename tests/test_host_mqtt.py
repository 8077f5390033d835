"""The host's MQTT client, as the harness uses it to time journeys."""

from __future__ import annotations

import socket
import threading

from host_harness.broker.running import RunningBroker
from host_harness.link.mqtt_client import HostMqtt


def test_the_host_client_sends_small_packets_at_once(broker: RunningBroker) -> None:
    """Nagle's algorithm off on the host side: a PUBACK then a command must not wait for the broker's delayed ACK."""
    mq = HostMqtt(broker.info, "nodelay").connect()
    try:
        sock = mq.client.socket()
        assert isinstance(sock, socket.socket)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        mq.close()


def test_a_publish_is_written_by_the_calling_thread_not_handed_to_paho(broker: RunningBroker) -> None:
    """paho's network thread held up in a callback: a QoS 0 publish still reaches the broker at once
    (retained when asked); handed to that thread it would wait for the callback to end."""
    watch = HostMqtt(broker.info, "watch").connect()
    mq = HostMqtt(broker.info, "direct").connect()
    held, release = threading.Event(), threading.Event()

    def hold(*_: object) -> None:
        held.set()
        release.wait(30)

    try:
        watch.subscribe("direct/#")
        mq.subscribe("hold")
        mq.client.on_message = hold
        watch.publish("hold", "x")
        assert held.wait(5), "mq's network thread never took the message"
        mq.publish("direct/a", '{"n":1}')
        mq.publish("direct/b", "é" * 200, retain=True)  # a two-byte remaining length
        ev = watch.log.wait_for(lambda e: e.topic == "direct/a", 5, "direct/a while paho's thread is held")
        assert ev.get("n") == 1
        watch.log.wait_for(lambda e: e.topic == "direct/b", 5, "direct/b while paho's thread is held")
        late = HostMqtt(broker.info, "late").connect()
        try:
            late.subscribe("direct/b")
            ev = late.log.wait_for(lambda e: e.topic == "direct/b", 5, "the retained direct/b")
            assert ev.get("payload") == "é" * 200
        finally:
            late.close()
    finally:
        release.set()
        mq.close()
        watch.close()
