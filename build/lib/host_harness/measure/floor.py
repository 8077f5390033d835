"""The broker's floor: a client publishing to itself through the same broker."""

from __future__ import annotations

from host_harness.link.mqtt_client import HostMqtt
from host_harness.measure.progress import Progress


def floor_ms(mq: HostMqtt, count: int, progress: bool = True) -> list[float]:
    """Round trips (ms) of ``count`` self-publishes, one at a time."""
    topic = f"bench/{mq.client_id}/loop"
    mq.subscribe(topic)
    out = []
    bar = Progress(count, "floor   ") if progress else None
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
