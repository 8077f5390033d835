"""Taps: a client on the host clock at each broker on the path, to split the network hops there.

A tap is an MQTT client subscribed at QoS 0 to a device's command and state
topics (``<base>/set``, ``<base>/state``) on one broker, in the measuring
process (a tap in a process of its own cost more on a 2-core host: the extra
process competes for the cores with the broker and the device). The moment a
message reaches it (``time.monotonic_ns()`` on arrival, the clock the journeys use)
stands for "the broker forwarded it". It is later than that by the broker's
delivery to the tap, which the taps measure (:meth:`Taps.floor`: half the
round trip of a tap publishing to itself through the same broker) and the
report states as each tap's uncertainty.

    taps = Taps([TapPoint("broker", broker.info)], make_client).connect()
    taps.on(device.base)                  # subscribed: journeys get tap times
    journeys.taps = taps                  # measure.journeys stamps each journey
    taps.off()                            # unsubscribed: costs the broker nothing
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

from host_harness.broker.info import BrokerInfo
from host_harness.core.events import WaitTimeout
from host_harness.core.journey import Journey
from host_harness.link.mqtt_client import HostMqtt

#: Seconds a tap may lag the journey's confirmation before its time counts as missed.
TAP_WAIT_S = 2.0
#: Round trips per tap for the delivery floor.
FLOOR_COUNT = 50
#: Where a tap's own probes go: outside the device's base topic, so a bridge does not carry them.
PROBE_PREFIX = "lightctl-tap"

MakeClient = Callable[[BrokerInfo, str], HostMqtt]


@dataclass(frozen=True)
class TapPoint:
    """A broker on the path: its name in the hop names (broker, cloud, local) and where it listens."""

    name: str
    info: BrokerInfo


@dataclass
class TapFloor:
    """A tap's delivery latency: half its own round trips through the broker, in ms."""

    name: str
    samples_ms: list[float] = field(default_factory=list)

    @property
    def p50(self) -> float:
        return statistics.median(self.samples_ms) if self.samples_ms else float("nan")

    @property
    def p99(self) -> float:
        xs = sorted(self.samples_ms)
        return xs[min(len(xs) - 1, int(0.99 * len(xs)))] if xs else float("nan")

    @property
    def max(self) -> float:
        return max(self.samples_ms) if self.samples_ms else float("nan")

    def describe(self) -> str:
        return f"{self.name}: p50 {self.p50:.3f} ms, p99 {self.p99:.3f} ms ({len(self.samples_ms)} round trips / 2)"


class Tap:
    """One broker's tap: a client whose log holds the command and state messages it saw."""

    def __init__(self, point: TapPoint, make_client: MakeClient) -> None:
        self.point = point
        self.client = make_client(point.info, f"tap-{point.name}")

    @property
    def name(self) -> str:
        return self.point.name

    def mark(self) -> int:
        return self.client.log.cursor

    def seen(self, topic: str, cid: str, since: int, timeout: float) -> int | None:
        """Host ns when the (live, not retained) message with command id ``cid`` on ``topic`` reached the tap."""
        try:
            ev = self.client.log.wait_for(
                lambda e: e.topic == topic and e.get("id") == cid and not e.get("_retained"),
                timeout,
                f"tap at {self.name} broker to see {topic} of command {cid!r}",
                since,
            )
        except WaitTimeout:
            return None
        return ev.host_ns

    def floor(self, count: int = FLOOR_COUNT, timeout: float = 5.0) -> TapFloor:
        """Half the round trip of messages the tap publishes to itself through its broker."""
        topic = f"{PROBE_PREFIX}/{self.client.client_id}/probe"
        self.client.subscribe(topic, qos=0)
        out = TapFloor(self.name)
        try:
            for i in range(count):
                since = self.client.log.cursor
                t0 = self.client.publish(topic, f'{{"id": "probe-{i}"}}')
                ev = self.client.log.wait_for(
                    lambda e, i=i: e.topic == topic and e.get("id") == f"probe-{i}",
                    timeout,
                    f"tap at {self.name} broker to receive its own probe {i}",
                    since,
                )
                out.samples_ms.append((ev.host_ns - t0) / 2e6)
        finally:
            self.client.unsubscribe(topic)
        return out


class Taps:
    """The taps on a path, host side first: ``[broker]`` or ``[cloud, local]``."""

    def __init__(self, points: list[TapPoint], make_client: MakeClient) -> None:
        if not points:
            raise ValueError("taps need at least one broker")
        self.taps = [Tap(p, make_client) for p in points]
        self.active = False
        self.missed = 0  # tap times not seen within TAP_WAIT_S of the confirmation
        self._base: str | None = None

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.taps]

    def connect(self) -> Taps:
        for t in self.taps:
            t.client.connect()
        return self

    def on(self, base: str) -> Taps:
        """Subscribe every tap to ``<base>/set`` and ``<base>/state`` (QoS 0); journeys get tap times."""
        for t in self.taps:
            for leaf in ("set", "state"):
                t.client.subscribe(f"{base}/{leaf}", qos=0)
        self._base, self.active = base, True
        return self

    def off(self) -> None:
        """Unsubscribe: the brokers send the taps nothing, journeys get no tap times."""
        if self._base is not None:
            for t in self.taps:
                for leaf in ("set", "state"):
                    t.client.unsubscribe(f"{self._base}/{leaf}")
        self.active = False

    def marks(self) -> list[int]:
        """Each tap's log cursor: taken before a command is sent, passed to :meth:`stamp`."""
        return [t.mark() for t in self.taps]

    def stamp(self, j: Journey, marks: list[int], base: str, command: bool = True) -> Journey:
        """Fill ``j.taps``: when each tap saw the command (``command``: it went through the brokers)
        and the state carrying its id."""
        if not self.active:
            return j
        for t, since in zip(self.taps, marks, strict=True):
            t_set = t.seen(f"{base}/set", j.id, since, TAP_WAIT_S) if command else None
            t_state = t.seen(f"{base}/state", j.id, since, TAP_WAIT_S)
            self.missed += (command and t_set is None) + (t_state is None)
            j.taps[t.name] = (t_set, t_state)
        return j

    def floor(self, count: int = FLOOR_COUNT) -> list[TapFloor]:
        return [t.floor(count) for t in self.taps]

    def close(self) -> None:
        for t in self.taps:
            t.client.close()


def describe_floor(floors: list[TapFloor]) -> str:
    return "; ".join(f.describe() for f in floors)
