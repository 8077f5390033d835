"""The host's MQTT client, as the harness uses it to time journeys."""

from __future__ import annotations

import socket

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
