"""The broker's floor: a client publishing to itself through the same broker.

Closed loop (one message at a time) or open loop (a message every 1/rate s,
timed from its intended start, as ``load.open_loop_mqtt`` sends commands): a
closed-loop floor flatters an open-loop journey. Behind a link the floor client
must cross the same link as the device: ``floor_across`` runs it in the device's
namespace (``python -m host_harness.measure.floor`` with the broker's URL on
stdin, so a password never shows in a process list).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from host_harness.broker.info import BrokerInfo, parse_broker_url
from host_harness.link.mqtt_client import HostMqtt
from host_harness.measure.progress import Progress


def floor_ms(mq: HostMqtt, count: int, progress: bool = True, rate: float | None = None) -> list[float]:
    """Round trips (ms) of ``count`` self-publishes: one at a time, or ``rate``
    per second (each timed from its intended start)."""
    topic = f"bench/{mq.client_id}/loop"
    mq.subscribe(topic)
    out = []
    bar = Progress(count, "floor   ") if progress else None
    if rate is not None:
        if rate <= 0:
            raise ValueError("rate must be > 0")
        since = mq.log.cursor
        t0 = time.monotonic_ns() + 20_000_000
        intended = [t0 + int(i * 1e9 / rate) for i in range(count)]
        for i, t in enumerate(intended):
            delay = (t - time.monotonic_ns()) / 1e9
            if delay > 0:
                time.sleep(delay)
            mq.publish(topic, f'{{"n":{i}}}')
        for i, t in enumerate(intended):
            ev = mq.log.wait_for(
                lambda e, i=i: e.topic == topic and e.get("n") == i, 5, f"self-publish {i} on {topic}", since
            )
            out.append((ev.host_ns - t) / 1e6)
            if bar:
                bar.update()
    else:
        for i in range(count):
            since = mq.log.cursor
            t = mq.publish(topic, f'{{"n":{i}}}')
            ev = mq.log.wait_for(
                lambda e, i=i: e.topic == topic and e.get("n") == i, 5, f"self-publish {i} on {topic}", since
            )
            out.append((ev.host_ns - t) / 1e6)
            if bar:
                bar.update()
    if bar:
        bar.close()
    return out


def floor_across(prefix: list[str], info: BrokerInfo, count: int, rate: float | None = None) -> list[float]:
    """``floor_ms`` run under ``prefix`` (``ip netns exec NS``: across a link), warm-up included."""
    cmd = [*prefix, sys.executable, "-m", "host_harness.measure.floor", str(count), str(rate or 0)]
    r = subprocess.run(cmd, input=info.url, capture_output=True, text=True, timeout=60 + 3 * count)
    if r.returncode:
        raise RuntimeError(f"floor client across the link failed: {r.stderr.strip().splitlines()[-1:]}")
    return [float(x) for x in json.loads(r.stdout)]


def _main() -> int:
    count, rate = int(sys.argv[1]), float(sys.argv[2])
    mq = HostMqtt(parse_broker_url(sys.stdin.read().strip()), "floor").connect()
    try:
        floor_ms(mq, 10, progress=False)  # warm-up
        print(json.dumps(floor_ms(mq, count, progress=False, rate=rate or None)))
    finally:
        mq.close()
    return 0


if __name__ == "__main__":
    sys.exit(_main())
