"""Fault scenarios: every command counted, whatever the network does.

A scenario sends commands the way a careful app does — each with an id,
published at QoS 1 and retried with the same id until it is confirmed — while
a fault is injected, and then counts, per command id:

- applied once: the device applied it exactly once (its serial ``change``
  events, across every device process the scenario ran);
- duplicated: applied more than once;
- lost: never applied, or never confirmed to the host;

and the time to recover: from the fault healing to the next confirmation.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from host_harness.broker.running import RunningBroker
from host_harness.core.events import Event, WaitTimeout
from host_harness.core.ids import IdMaker
from host_harness.core.table import render
from host_harness.dut.device import Device
from host_harness.link.mqtt_client import HostMqtt
from host_harness.netfault.proxy import FaultProxy


@dataclass
class Outcome:
    cmd_id: str
    attempts: int
    confirmed: bool
    t_first_send: float  # time.monotonic()
    t_confirmed: float | None


@dataclass
class ScenarioResult:
    name: str
    outcomes: list[Outcome] = field(default_factory=list)
    applied: Counter[str] = field(default_factory=Counter)
    recovery_s: float | None = None
    notes: list[str] = field(default_factory=list)
    acks: list[str] = field(default_factory=list)  # ids answered on .../ack as repeats

    @property
    def sent(self) -> int:
        return len(self.outcomes)

    @property
    def attempts(self) -> int:
        return sum(o.attempts for o in self.outcomes)

    @property
    def applied_once(self) -> int:
        return sum(1 for o in self.outcomes if self.applied[o.cmd_id] == 1)

    @property
    def duplicated(self) -> int:
        return sum(1 for o in self.outcomes if self.applied[o.cmd_id] > 1)

    @property
    def lost(self) -> int:
        return sum(1 for o in self.outcomes if self.applied[o.cmd_id] == 0 or not o.confirmed)

    def counts(self) -> dict[str, Any]:
        """The name and counts, in table order (``HEADERS``, before recovery)."""
        return {k: getattr(self, k) for k in ("name", "sent", "attempts", "applied_once", "duplicated", "lost")}

    def row(self) -> list[object]:
        rec = "-" if self.recovery_s is None else f"{self.recovery_s:.2f}"
        return [*self.counts().values(), rec]

    def as_dict(self) -> dict[str, Any]:
        return {**self.counts(), "recovery_s": self.recovery_s, "notes": self.notes}


HEADERS = ["scenario", "commands", "publishes", "applied once", "duplicated", "lost", "recovery s"]


def table(results: list[ScenarioResult]) -> str:
    return render(HEADERS, [r.row() for r in results])


class ReliableSender:
    """Publishes commands at QoS 1 and retries each with the same id until confirmed."""

    def __init__(self, mqtt: HostMqtt, base: str, attempt_timeout: float = 2.0) -> None:
        self.mqtt = mqtt
        self.base = base
        self.attempt_timeout = attempt_timeout
        for leaf in ("state", "ack", "error"):
            mqtt.subscribe(f"{base}/{leaf}", qos=1)

    def confirmation(self, cid: str, since: int, timeout: float) -> bool:
        topics = (f"{self.base}/state", f"{self.base}/ack")
        try:
            self.mqtt.log.wait_for(
                lambda e: e.topic in topics and e.get("id") == cid, timeout, f"confirmation of {cid!r}", since
            )
            return True
        except WaitTimeout:
            return False

    def send(self, cid: str, command: dict[str, Any], deadline_s: float = 60.0) -> Outcome:
        payload = json.dumps({**command, "id": cid})
        t0 = time.monotonic()
        attempts = 0
        since = self.mqtt.log.cursor
        while time.monotonic() - t0 < deadline_s:
            attempts += 1
            with contextlib.suppress(ConnectionError):  # broker away: the wait below paces the retry
                self.mqtt.publish(f"{self.base}/set", payload, qos=1)
            left = deadline_s - (time.monotonic() - t0)
            if self.confirmation(cid, since, min(self.attempt_timeout, max(0.05, left))):
                return Outcome(cid, attempts, True, t0, time.monotonic())
        return Outcome(cid, attempts, False, t0, None)


def count_applied(devices: list[Device], ids: set[str], settle_s: float = 3.0) -> Counter[str]:
    """How often each id was applied, over every device process's serial log.

    The device writes its console line after the MQTT report, so a
    confirmation can reach the host before the console line does: wait (up to
    ``settle_s`` in all) for each id's line before counting it missing.
    """

    def applied(e: Event) -> bool:
        return e.kind == "change" and not e.get("dup") and e.get("id") in ids

    deadline = time.monotonic() + settle_s
    seen = {str(e.get("id")) for d in devices for e in d.log.events() if applied(e)}
    live = [d for d in reversed(devices) if d.log.closed_reason is None and (d.unix is None or d.unix.alive)]
    for cid in sorted(ids - seen):
        for d in live:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            with contextlib.suppress(WaitTimeout):
                d.log.wait_for(lambda e, cid=cid: applied(e) and e.get("id") == cid, left, f"console change {cid}")
                break
    c: Counter[str] = Counter()
    for d in devices:
        for e in d.log.events():
            if applied(e):
                c[str(e.get("id"))] += 1
    return c


def run_commands(
    name: str,
    sender: ReliableSender,
    devices: list[Device],
    ids: Callable[[], str],
    count: int,
    during: Callable[[int], None] | None = None,
    deadline_s: float = 60.0,
) -> ScenarioResult:
    """Send ``count`` alternating commands; ``during(i)`` injects faults before command i."""
    res = ScenarioResult(name)
    for i in range(count):
        if during is not None:
            during(i)
        cmd = {"state": "ON" if i % 2 == 0 else "OFF", "brightness": (i * 37) % 255 + 1}
        res.outcomes.append(sender.send(ids(), cmd, deadline_s))
    res.applied = count_applied(devices, {o.cmd_id for o in res.outcomes})
    return res


# -- the scenarios -----------------------------------------------------------
# Each takes the broker (started by the harness: some restart it), a fault
# proxy between the device and the broker, and a way to start a device
# (``make_device(**open_device kwargs)``) that connects through that proxy.

MakeDevice = Callable[..., Device]


def _first_confirmed_after(res: ScenarioResult, start_index: int) -> float | None:
    times = [o.t_confirmed for o in res.outcomes[start_index:] if o.t_confirmed]
    return min(times) if times else None


def lost_confirmation(broker: RunningBroker, make_device: MakeDevice, count: int = 5) -> ScenarioResult:
    """The device applies a command, its confirmation to the host is dropped;
    the host retries with the same id and gets the original answer."""
    from host_harness.netfault.framing import mqtt_publish_payload, mqtt_publish_topic
    from host_harness.netfault.proxy import FaultProxy

    dev = make_device()
    host_proxy = FaultProxy(broker.info.host, broker.info.port).start()
    mq = HostMqtt(host_proxy.info_for(broker.info), "faults").connect()
    try:
        sender = ReliableSender(mq, dev.base, attempt_timeout=1.0)
        ids = IdMaker("lost")
        victim = f"{ids.prefix}-{count // 2 + 1}"

        def during(i: int) -> None:
            if i == count // 2:
                host_proxy.down.drop_next(
                    lambda p: (
                        (mqtt_publish_topic(p) or "").endswith("/state")
                        and victim.encode() in (mqtt_publish_payload(p) or b"")
                    )
                )

        res = run_commands("confirmation lost, retried", sender, [dev], ids, count, during)
        res.notes.append(f"victim {victim}")
        res.acks = [str(e.get("id")) for e in mq.log.events() if e.topic == f"{dev.base}/ack" and e.get("dup")]
        return res
    finally:
        mq.close()
        host_proxy.stop()


def broker_restart(broker: RunningBroker, make_device: MakeDevice, count: int = 10) -> ScenarioResult:
    dev = make_device()
    mq = HostMqtt(broker.info, "faults").connect()
    restarted: list[float] = []

    def during(i: int) -> None:
        if i == count // 2:
            broker.restart()
            restarted.append(time.monotonic())

    try:
        res = run_commands("broker restarted", ReliableSender(mq, dev.base, 1.0), [dev], IdMaker("brk"), count, during)
    finally:
        mq.close()
    first = _first_confirmed_after(res, count // 2)
    res.recovery_s = None if first is None else first - restarted[0]
    return res


def partition(
    broker: RunningBroker, proxy: FaultProxy, make_device: MakeDevice, count: int = 6, seconds: float = 10.0
) -> ScenarioResult:
    """Traffic between device and broker black-holed (TCP notices nothing), then healed."""
    dev = make_device()
    mq = HostMqtt(broker.info, "faults").connect()
    healed: list[float] = []
    at = count // 2

    def heal() -> None:
        proxy.up.blackhole = proxy.down.blackhole = False
        proxy.cut()  # the dead connections do not come back to life
        healed.append(time.monotonic())

    def during(i: int) -> None:
        if i == at:
            proxy.up.blackhole = proxy.down.blackhole = True
            threading.Timer(seconds, heal).start()

    try:
        sender, ids = ReliableSender(mq, dev.base, 2.0), IdMaker("part")
        res = run_commands(
            f"partition {seconds:g} s, healed", sender, [dev], ids, count, during, deadline_s=seconds + 30
        )
    finally:
        mq.close()
    first = _first_confirmed_after(res, at)
    res.recovery_s = None if first is None or not healed else first - healed[0]
    return res


def _wait_until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise WaitTimeout(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.005)


def device_killed(broker: RunningBroker, proxy: FaultProxy, make_device: MakeDevice, count: int = 4) -> ScenarioResult:
    """The device dies while a command is on its way to it; a new process takes over."""
    dev = make_device()
    mq = HostMqtt(broker.info, "faults").connect()
    try:
        sender = ReliableSender(mq, dev.base, attempt_timeout=2.0)
        ids = IdMaker("kill")
        res = run_commands("device killed mid-command", sender, [dev], ids, count - 1)
        devices = [dev]
        proxy.down.paused = True  # the command reaches the broker, the link holds it
        held = proxy.down.stats.bytes_held
        cid = ids()
        box: list[Outcome] = []
        t = threading.Thread(target=lambda: box.append(sender.send(cid, {"state": "ON", "brightness": 42}, 30)))
        t.start()
        _wait_until(lambda: proxy.down.stats.bytes_held > held, 10, f"the proxy to hold command {cid} for the device")
        if dev.unix is None:
            raise RuntimeError("this scenario kills a Unix-port device process")
        dev.unix.kill()
        killed = time.monotonic()
        proxy.cut()
        proxy.down.paused = False
        dev2 = make_device(device_id=dev.device_id)
        devices.append(dev2)
        t.join(35)
        if not box:
            raise RuntimeError("the command sent during the kill never finished")
        res.outcomes.append(box[0])
        res.applied = count_applied(devices, {o.cmd_id for o in res.outcomes})
        res.recovery_s = (box[0].t_confirmed or killed) - killed
        st = dev2.get()
        res.notes.append(f"state after restart {st.get('state')} {st.get('brightness')}")
        return res
    finally:
        mq.close()


def slow_link(
    broker: RunningBroker, proxy: FaultProxy, make_device: MakeDevice, count: int = 5, delay_s: float = 0.5
) -> ScenarioResult:
    dev = make_device()
    proxy.up.delay_s = proxy.down.delay_s = delay_s
    mq = HostMqtt(broker.info, "faults").connect()
    try:
        sender = ReliableSender(mq, dev.base, 3.0)
        res = run_commands(f"slow link {delay_s * 1000:g} ms each way", sender, [dev], IdMaker("slow"), count)
    finally:
        mq.close()
        proxy.up.delay_s = proxy.down.delay_s = 0.0
    return res
