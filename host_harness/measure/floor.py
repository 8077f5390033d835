"""Floors: what the same path costs without the device's firmware on it.

Two kinds. The self floor: a client publishing to itself through the same
broker, one pass through it. The echo floor: the journey's own route, host
client -> broker -> a responder in the device's place -> broker -> host
client, where the responder is a plain paho client that publishes what it
receives back at once (Nagle off, ACKs sent at once, as the harness's own
client). A journey passes the broker twice, so it is never under twice the
self floor; the echo floor is what the firmware is measured against.

Closed loop (one message at a time) or open loop (a message every 1/rate s,
timed from its intended start, as ``load.open_loop_mqtt`` sends commands): a
closed-loop floor flatters an open-loop journey. Behind a link the floor client
(or the responder) must cross the same link as the device: ``floor_across`` and
``echo_across`` run it in the device's namespace (``python -m
host_harness.measure.floor`` with the broker's URL on stdin, so a password never
shows in a process list).
"""

from __future__ import annotations

import json
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import paho.mqtt.client as paho

from host_harness import children
from host_harness.broker.info import BrokerInfo, parse_broker_url
from host_harness.link.mqtt_client import HostMqtt, ack_now
from host_harness.measure import pace
from host_harness.measure.progress import Progress


def floor_ms(
    mq: HostMqtt,
    count: int,
    progress: bool = True,
    rate: float | None = None,
    echo: str | None = None,
    tag: str = "m",
) -> list[float]:
    """Round trips (ms) of ``count`` self-publishes (with ``echo``: messages to
    the responder on ``<echo>/in``, back on ``<echo>/out``): one at a time, or
    ``rate`` per second (each timed from its intended start). Message i is
    ``{"n":i,"r":tag}`` (``message(i, tag)``): a later round with another tag is
    never answered by a late message of an earlier one."""
    send = topic = f"bench/{mq.client_id}/loop"
    if echo is not None:
        send, topic = f"{echo}/in", f"{echo}/out"
    mq.subscribe(topic)
    out = []
    bar = Progress(count, "floor   ") if progress else None

    def back(i: int, sent_ns: int, since: int) -> None:
        ev = mq.log.wait_for(
            lambda e: e.topic == topic and e.get("n") == i and e.get("r") == tag,
            5,
            f"message {i} back on {topic}",
            since,
        )
        out.append((ev.host_ns - sent_ns) / 1e6)
        if bar:
            bar.update()

    if rate is not None:
        if rate <= 0:
            raise ValueError("rate must be > 0")
        since = mq.log.cursor
        t0 = time.monotonic_ns() + 20_000_000
        intended = [t0 + int(i * 1e9 / rate) for i in range(count)]
        pacer = pace.Pacer(1e9 / rate)
        for i, t in enumerate(intended):
            pacer.until(t)
            mq.publish(send, message(i, tag))
        for i, t in enumerate(intended):
            back(i, t, since)
    else:
        for i in range(count):
            since = mq.log.cursor
            back(i, mq.publish(send, message(i, tag)), since)
    if bar:
        bar.close()
    return out


def floor_across(
    prefix: list[str], info: BrokerInfo, count: int, rate: float | None = None, tag: str = "m"
) -> list[float]:
    """``floor_ms`` run under ``prefix`` (``ip netns exec NS``: across a link), warm-up included."""
    cmd = [*prefix, sys.executable, "-m", "host_harness.measure.floor", str(count), str(rate or 0), tag]
    r = subprocess.run(cmd, input=info.url, capture_output=True, text=True, timeout=60 + 3 * count)
    if r.returncode:
        raise RuntimeError(f"floor client across the link failed: {r.stderr.strip().splitlines()[-1:]}")
    return [float(x) for x in json.loads(r.stdout)]


def message(i: int, tag: str) -> str:
    return f'{{"n":{i},"r":"{tag}"}}'


class Responder(HostMqtt):
    """Publishes every message on ``<topic>/in`` back on ``<topic>/out`` at once."""

    def __init__(self, broker: BrokerInfo, topic: str) -> None:
        super().__init__(broker, "echo")
        self.topic = topic

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        client.publish(f"{self.topic}/out", msg.payload)
        ack_now(client)


@contextmanager
def echo_across(prefix: list[str], info: BrokerInfo, topic: str, timeout: float = 20.0) -> Iterator[str]:
    """A responder under ``prefix`` (the device's namespace), subscribed before
    this yields ``topic`` (for ``floor_ms(..., echo=topic)``); it ends when the
    block does (its stdin closes), or with lightctl."""
    cmd = [*prefix, sys.executable, "-m", "host_harness.measure.floor", "echo", topic]
    proc = children.spawn(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(info.url + "\n")
        proc.stdin.flush()
        r, _, _ = select.select([proc.stdout], [], [], timeout)
        line = proc.stdout.readline() if r else ""
        if line.strip() != "ready":
            try:
                proc.wait(1 if r else 0.01)  # r: it said something else, or closed its output
            except subprocess.TimeoutExpired:
                raise RuntimeError(
                    f"timed out after {timeout:g} s waiting for the echo responder to subscribe"
                ) from None
            err = (proc.stderr.read().strip().splitlines() or ["no message"])[-1] if proc.stderr else ""
            raise RuntimeError(f"the echo responder exited before subscribing: {err}")
        yield topic
    finally:
        if proc.stdin:
            proc.stdin.close()
        children.end(proc)
        for f in (proc.stdout, proc.stderr):
            if f:
                f.close()


def _echo(topic: str) -> int:
    mq = Responder(parse_broker_url(sys.stdin.readline().strip()), topic).connect()
    try:
        mq.subscribe(f"{topic}/in")
        print("ready", flush=True)
        sys.stdin.read()  # until the parent closes it
    finally:
        mq.close()
    return 0


def _main() -> int:
    if sys.argv[1] == "echo":
        return _echo(sys.argv[2])
    count, rate, tag = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
    mq = HostMqtt(parse_broker_url(sys.stdin.read().strip()), "floor").connect()
    try:
        floor_ms(mq, 10, progress=False, tag="warm-up")
        print(json.dumps(floor_ms(mq, count, progress=False, rate=rate or None, tag=tag)))
    finally:
        mq.close()
    return 0


if __name__ == "__main__":
    sys.exit(_main())
