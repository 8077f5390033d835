"""A fleet: N devices served by one host MQTT client, one device's journeys or a group's.

``Fleet(devices, broker)`` connects one FleetMqtt (one network thread), syncs
each device's clock over its serial link, and then drives:

- ``fleet.journey(i)``: a measure.journeys.Journeys against one device,
- ``fleet.group().set("ON")``: one command to every light (N commands back to
  back, or one message on the group topic), a core.group.GroupJourney,
- ``fleet.closed_loop_all(n)``: every device in closed loop at once, each next
  command sent from the network thread as the confirmation arrives,
- ``fleet.follow(a, b)``: light ``b`` follows light ``a``'s button.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator, Sequence

from host_harness.broker.info import BrokerInfo
from host_harness.core.clocktruth import UNIX_PERIOD, UnixClockTruth
from host_harness.core.events import Event, WaitTimeout
from host_harness.core.group import GroupJourney
from host_harness.core.hops import ClockMap
from host_harness.core.ids import IdMaker
from host_harness.core.journey import Journey, journey_from_event, set_command
from host_harness.core.results import JourneyRun
from host_harness.dut.device import CommandError, Device
from host_harness.link.fleet_mqtt import DeviceView, FleetMqtt, Hook
from host_harness.measure.clocksync import SyncedClock
from host_harness.measure.journeys import Journeys
from host_harness.measure.load import command_for
from host_harness.measure.progress import Progress

FLEET_SYNC_PINGS = 40  # per device, over serial: enough for a ±50 µs offset on the Unix port


def group_topic(base_topic: str, group: str) -> str:
    """The topic every light of ``group`` takes commands on (firmware/mqtt_link.py)."""
    return f"{base_topic}/group/{group}/set"


class Fleet:
    """N devices (booted, MQTT up) and one host MQTT client serving them all."""

    def __init__(
        self,
        devices: Sequence[Device],
        broker: BrokerInfo,
        group: str | None = None,
        timeout: float = 5.0,
        sync_pings: int = FLEET_SYNC_PINGS,
        progress: bool = False,
        **client_kw: str | None,
    ) -> None:
        if not devices:
            raise ValueError("a fleet needs at least one device")
        self.devices = list(devices)
        self.group_name = group
        self.timeout = timeout
        bases = {d.info.get("base_topic", "lightctl") for d in self.devices}
        if len(bases) != 1:
            raise ValueError(f"a fleet's devices share one base topic; these have {sorted(bases)}")
        self.base_topic = str(bases.pop())
        self.ids = IdMaker("g")
        self.mqtt = FleetMqtt(broker, self.base_topic, **client_kw)
        for d in self.devices:
            self.mqtt.serve(d.device_id)
        self.mqtt.connect()
        try:
            self.mqtt.subscribe_all()
            for d in self.devices:
                d.wait_mqtt()
            bar = Progress(len(self.devices), "clock sync") if progress else None
            self.clocks: dict[str, SyncedClock] = {}
            for d in self.devices:
                self.clocks[d.device_id] = SyncedClock(d, pings=sync_pings)
                if bar:
                    bar.update()
            if bar:
                bar.close()
        except BaseException:
            self.mqtt.close()
            raise

    def __len__(self) -> int:
        return len(self.devices)

    def __getitem__(self, i: int) -> Device:
        return self.devices[i]

    def __iter__(self) -> Iterator[Device]:
        return iter(self.devices)

    def clock(self, device: Device) -> ClockMap:
        return self.clocks[device.device_id]

    def truths(self) -> dict[str, UnixClockTruth]:
        """The exact clock of every Unix-port device that runs on the host's clock (no emulated period)."""
        return {
            d.device_id: UnixClockTruth(0, UNIX_PERIOD)
            for d in self.devices
            if d.unix is not None and int(d.info.get("ticks_period", 0)) == UNIX_PERIOD
        }

    def clock_note(self) -> str:
        """The clock sync of all devices in one line: the worst uncertainty, and the worst error vs the truth."""
        unc = max(c.model.uncertainty_us for c in self.clocks.values())
        text = f"{len(self.clocks)} clocks synced over serial, uncertainty up to ±{unc:.0f} µs"
        truths = self.truths()
        if truths:
            err = max(abs(t.offset_error_us(self.clocks[i].model)) for i, t in truths.items())
            text += f"; error vs the Unix port's true offset up to {err:.1f} µs"
        return text

    def journey(self, i: int | Device) -> Journeys:
        """Journeys against one device, through the fleet's one client."""
        d = self.devices[i] if isinstance(i, int) else i
        return Journeys(d, DeviceView(self.mqtt, d.device_id), timeout=self.timeout)  # type: ignore[arg-type]

    def group(self, devices: Sequence[Device] | None = None) -> Group:
        """The whole fleet, or some of its devices, addressed together."""
        return Group(self, list(devices) if devices is not None else self.devices)

    def follow(self, leader: Device, follower: Device) -> None:
        """``follower`` copies ``leader``'s state whenever ``leader``'s button changes it.

        Host automation, as a home hub does it: on ``leader``'s state with
        ``src: button`` (in the network thread, as it arrives), the same state
        and brightness go to ``follower`` with the id ``follow-<leader's id>``.
        """
        set_t = f"{follower.base}/set"

        def hook(ev: Event) -> None:
            if ev.topic.endswith("/state") and ev.get("src") == "button" and not ev.get("_retained"):
                cmd = set_command(str(ev.get("state")), int(ev.get("brightness", 0)) or None, f"follow-{ev.get('id')}")
                self.mqtt.publish(set_t, json.dumps(cmd))

        self.mqtt.add_hook(leader.device_id, hook)

    def closed_loop_all(self, per_device: int, seed: int = 1, progress: Progress | None = None) -> JourneyRun:
        """Every device in closed loop at once, ``per_device`` MQTT journeys each.

        One client, no thread per device: the first command of each goes out
        from here, every next one from the network thread as the previous
        confirmation arrives. A command unconfirmed after the timeout is lost
        and the device's next one sent.
        """
        run = JourneyRun("mqtt", f"{len(self)} devices at once, one client")
        lock = threading.Lock()
        done = threading.Event()
        rng = random.Random(seed)
        pending: dict[str, tuple[str, int]] = {}  # device id -> (command id, host ns sent)
        sent = dict.fromkeys((d.device_id for d in self.devices), 0)
        got: list[tuple[Journey, str]] = []
        by_id = {d.device_id: d for d in self.devices}

        def send(dev_id: str) -> None:
            # Caller holds the lock.
            if sent[dev_id] >= per_device:
                pending.pop(dev_id, None)
                if not pending:
                    done.set()
                return
            st, br = command_for(sent[dev_id], rng)
            sent[dev_id] += 1
            cid = by_id[dev_id].ids()
            pending[dev_id] = (cid, time.monotonic_ns())
            self.mqtt.client.publish(f"{self.base_topic}/{dev_id}/set", json.dumps(set_command(st, br, cid)))

        def hook_for(dev_id: str, period: int) -> Hook:
            def hook(ev: Event) -> None:
                with lock:
                    p = pending.get(dev_id)
                    if p is None or ev.get("id") != p[0] or not ev.topic.endswith("/state"):
                        return
                    got.append((journey_from_event("mqtt", p[0], p[1], ev, period), dev_id))
                    send(dev_id)
                if progress:
                    progress.update(1)

            return hook

        hooks = {d.device_id: hook_for(d.device_id, int(d.info.get("ticks_period") or 2**30)) for d in self.devices}
        for dev_id, h in hooks.items():
            self.mqtt.add_hook(dev_id, h)
        try:
            with lock:
                for d in self.devices:
                    send(d.device_id)
            while not done.wait(0.1):
                now = time.monotonic_ns()
                with lock:
                    for dev_id, (cid, t) in list(pending.items()):
                        if now - t > self.timeout * 1e9:
                            run.lost.append(f"{dev_id}: {cid} unconfirmed after {self.timeout:g} s")
                            if progress:
                                progress.update(1, "LOST")
                            send(dev_id)
        finally:
            for dev_id, h in hooks.items():
                self.mqtt.remove_hook(dev_id, h)
        got.sort(key=lambda x: x[0].t_send_ns)
        for j, dev_id in got:
            run.add(j, self.clocks[dev_id])
        return run

    def close(self) -> None:
        self.mqtt.close()


class Group:
    """Some lights of a fleet, commanded together."""

    def __init__(self, fleet: Fleet, devices: list[Device]) -> None:
        self.fleet = fleet
        self.devices = devices

    def set(
        self,
        state: str | None = None,
        brightness: int | None = None,
        via: str = "each",
        cmd_id: str | None = None,
        timeout: float | None = None,
    ) -> GroupJourney:
        """One command to every light: ``via="each"`` sends N commands back to back,
        ``via="group"`` one message on the group topic. Waits for every light's
        state (or, for an id it had seen, its ``.../ack``) carrying the id.
        A light refusing it raises CommandError; lights still silent at the
        timeout are listed in ``missing``."""
        f = self.fleet
        cid = cmd_id or f.ids()
        payload = json.dumps(set_command(state, brightness, cid))
        cursors = {d.device_id: f.mqtt.serve(d.device_id).cursor for d in self.devices}
        if via == "group":
            if not f.group_name:
                raise RuntimeError("this fleet's devices were given no group")
            t0 = t_last = f.mqtt.publish(group_topic(f.base_topic, f.group_name), payload)
        elif via == "each":
            stamps = [f.mqtt.publish(f"{d.base}/set", payload) for d in self.devices]
            t0, t_last = stamps[0], stamps[-1]
        else:
            raise ValueError(f"via: {via!r}: 'each' or 'group'")
        gj = GroupJourney(cid, via, t0, t_last)
        deadline = time.monotonic() + (timeout or f.timeout)
        for d in self.devices:
            base = d.base
            topics = (f"{base}/state", f"{base}/ack", f"{base}/error")
            try:
                ev = f.mqtt.serve(d.device_id).wait_for(
                    lambda e, topics=topics: e.topic in topics and e.get("id") == cid,
                    max(0.0, deadline - time.monotonic()),
                    f"{d.device_id}'s state for group command {cid!r} on {topics[0]}",
                    cursors[d.device_id],
                )
            except WaitTimeout:
                gj.missing.append(d.device_id)
                continue
            if ev.topic == topics[2]:
                raise CommandError(ev)
            if ev.topic == topics[1]:
                gj.dup.append(d.device_id)
            gj.confirm_ns[d.device_id] = ev.host_ns
            gj.pin_ticks[d.device_id] = t_pin = int(ev.data["t_pin"])
            gj.pin_ns[d.device_id] = f.clock(d).device_to_host_ns(t_pin, ev.host_ns)
        return gj

    def reports(self, cmd_id: str, leaf: str = "state") -> dict[str, list[Event]]:
        """Every live (not retained) report each light has made on ``.../<leaf>``
        with ``cmd_id`` so far: a command applied once per light has one state each."""
        out = {}
        for d in self.devices:
            t = f"{d.base}/{leaf}"
            log = self.fleet.mqtt.serve(d.device_id)
            out[d.device_id] = [
                e for e in log.events() if e.topic == t and e.get("id") == cmd_id and not e.get("_retained")
            ]
        return out
