"""The 40 ms Nagle / delayed-ACK stall of a stock Mosquitto, produced with two plain clients.

A requester publishes at QoS 1 and waits for a responder's answer. The broker
writes the requester two small packets in a row, its PUBACK and then the
answer; without TCP_NODELAY, Nagle holds the answer until the PUBACK is
acknowledged, and the requester's kernel delays that ACK (40 ms on Linux).
The diagnosis must name it on the stock broker and stay silent on the tuned one.
"""

from __future__ import annotations

import socket
import time

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from host_harness.broker.mosquitto import find_mosquitto
from host_harness.broker.start import start_broker
from host_harness.core.diagnose import NAGLE, diagnose
from host_harness.link.mqtt_client import HostMqtt

pytestmark = pytest.mark.skipif(find_mosquitto() is None, reason="needs Mosquitto (the stall is a stock Mosquitto's)")

REQ, RESP = "stall/req", "stall/resp"


def round_trips(kind: str, n: int = 30) -> list[float]:
    with start_broker(kind) as broker:
        responder = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"responder-{kind}")
        responder.on_message = lambda c, _u, m: c.publish(RESP, m.payload, qos=1)
        responder.connect(broker.info.host, broker.info.port)
        # The clients send at once; only the broker's own setting differs between the runs.
        responder.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        responder.subscribe(REQ, qos=1)
        responder.loop_start()
        mq = HostMqtt(broker.info, "requester").connect()
        mq.client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            mq.subscribe(RESP, qos=1)
            got: list[float] = []
            for i in range(n):
                since = mq.log.cursor
                t = mq.publish(REQ, f"r{i}", qos=1)
                ev = mq.log.wait_for(
                    lambda e, i=i: e.get("payload") == f"r{i}", 5, f"the answer to request r{i}", since
                )
                got.append((ev.host_ns - t) / 1e6)
                time.sleep(0.002)  # not back to back: each request on a quiet connection, as a user's
        finally:
            mq.close()
            responder.loop_stop()
            responder.disconnect()
    return got


def test_a_stock_mosquitto_stalls_40ms_and_the_diagnosis_says_nagle() -> None:
    stock = round_trips("mosquitto")
    tuned = round_trips("mosquitto-tuned")
    assert NAGLE in [d.culprit for d in diagnose(stock)], sorted(stock)
    assert diagnose(tuned) == [], sorted(tuned)
