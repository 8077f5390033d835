"""The device side of the fuzz: send each example, match every answer to it, keep the light's model."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import assume, reject

from fuzz.oracle import (
    CTRL_C,
    ID_CHARS,
    Expect,
    Light,
    MicroPythonJson,
    id_ok,
    judge_mqtt,
    judge_serial,
    state_of,
)
from host_harness.core.events import Event, WaitTimeout
from host_harness.core.ids import IdMaker
from host_harness.dut.device import Device
from host_harness.link.credit import split_lines
from host_harness.link.mqtt_client import HostMqtt
from host_harness.link.replies import ANSWERS

MAX_EXCUSED = 0.1  # of the examples: more left unjudged fails the test (see SerialFuzzer)


class Fuzzer:
    """Sends examples to one device and checks its answers; fails fast once dead."""

    excused = 0  # examples left unjudged: what the device read was not what was sent

    def __init__(self, device: Device, reader: MicroPythonJson, timeout: float = 10.0) -> None:
        self.dev = device
        self.reader = reader
        self.timeout = timeout
        self.ids = IdMaker("fz")
        self.n = 0
        self.cases = 0
        self.dead: str | None = None
        self.last: bytes = b""
        self.light = Light.of(device.get())
        self.synced = True  # the last example ran to its end

    def begin(self, payload: bytes) -> None:
        self.check_alive()
        if not self.synced:  # the last example failed half way: let its answers pass
            self.light = Light.of(self.get())
        self.synced = False
        self.last = payload
        self.cases += 1

    def unique(self, obj: Any) -> Any:
        """A valid id made unique, keeping its length (the firmware answers a
        repeated id with the original event instead of applying it again)."""
        if isinstance(obj, dict) and id_ok(obj.get("id")):
            self.n += 1
            n, tag = self.n, ""
            while n:
                n, r = divmod(n, len(ID_CHARS))
                tag = ID_CHARS[r] + tag
            cid = obj["id"]
            obj = {**obj, "id": (cid + tag)[-len(cid) :]}
        return obj

    def check_alive(self) -> None:
        if self.dead is None and self.dev.unix is not None and not self.dev.unix.alive:
            self.dead = f"the device process died after {self.last[:200]!r}"
        if self.dead is not None:
            pytest.fail(f"{self.dead}; console:\n{self.dev.link.noise_tail(20)}", pytrace=False)

    def get(self) -> Event:
        """A serial get with a fresh id: a barrier for everything sent before."""
        try:
            return self.dev.request("get", self.timeout, id=self.ids())[1]
        except WaitTimeout as e:
            self.dead = f"the device stopped answering after {self.last[:200]!r}: {e}"
            self.check_alive()
            raise

    def answers(self, since: int, until: int, via: str) -> list[Event]:
        evs = [e for e in self.dev.log.events(since) if e.index < until and e.kind in ANSWERS]
        if via == "serial":
            return [e for e in evs if e.get("src") != "mqtt"]
        return evs

    def check_answer(self, got: Event | None, want: Expect, what: bytes, reply_id: str | None = None) -> None:
        """One answer against its expectation; a change is applied to the model."""
        assert got is not None, f"no answer to {what[:200]!r}, wanted {want}"
        d = got.data
        assert got.kind == want.kind or (want.kind == "change" and got.topic.endswith("/state")), (
            f"{what[:200]!r}: wanted {want}, got {d}"
        )
        if want.kind == "error":
            if want.code:
                assert d.get("code") == want.code, f"{what[:200]!r}: wanted {want.code}, got {d}"
            assert d.get("code") != "internal", f"{what[:200]!r} raised inside the firmware: {d}"
            assert d.get("id") == want.cid, f"{what[:200]!r}: error should name id {want.cid!r}: {d}"
        elif want.kind == "change":
            self.light.apply(want.state, want.brightness)
            assert state_of(got) == self.light.as_tuple(), f"{what[:200]!r} applied as {d}, wanted {self.light}"
            if want.cid:
                assert d.get("id") == want.cid, f"{what[:200]!r}: change carries id {d.get('id')!r}"
            else:
                assert d.get("id"), f"{what[:200]!r}: change without an id: {d}"
        else:
            assert d.get("id") == (reply_id if reply_id is not None else want.cid or ""), f"{what[:200]!r}: {d}"


class SerialFuzzer(Fuzzer):
    """Lines on the console. A line longer than the console's window arrives
    while the device reads it; if the device stops reading meanwhile (a
    process descheduled on a loaded host), an emulated console drops bytes
    and the device judges a line that was never sent. Such an example is
    told by the console's own count (``rx_dropped`` in ``info``, read after
    every long line), left unjudged and counted; ``run`` fails when that
    happens to more than one example in ten."""

    def __init__(self, device: Device, reader: MicroPythonJson, timeout: float = 10.0) -> None:
        super().__init__(device, reader, timeout)
        self.drops = self.console_drops()

    def console_drops(self) -> int | None:
        """The bytes the console dropped so far; None when it does not count them."""
        n = self.dev.request("info", self.timeout, id=self.ids())[1].get("rx_dropped")
        return n if isinstance(n, int) else None

    def long_line(self, payload: bytes) -> bool:
        window = self.dev.link.credit.window
        return window is not None and any(len(x) > window for x in split_lines(payload + b"\n"))

    def send(self, payload: bytes) -> None:
        """One payload (one or more lines), then a get as a barrier."""
        assert CTRL_C not in payload
        want = judge_serial(payload, self.reader)
        assume(all(w.kind != "ack" for w in want))  # a press toggles later: the storm tests cover it
        self.begin(payload)
        since = self.dev.log.cursor
        self.dev.link.write_raw(payload + b"\n")
        barrier = self.get()
        if self.drops is not None and self.long_line(payload):
            drops = self.console_drops()
            if drops != self.drops:
                self.drops = drops
                self.excused += 1
                self.light = Light.of(barrier)
                self.synced = True
                reject()  # the device read something else than was sent
        got = self.answers(since, barrier.index, "serial")
        assert len(got) == len(want), f"{payload[:200]!r}: {len(want)} answers wanted, got {[e.data for e in got]}"
        for g, w in zip(got, want, strict=True):
            self.check_answer(g, w, payload)
        assert state_of(barrier) == self.light.as_tuple(), f"after {payload[:200]!r} the light is {barrier.data}"
        self.synced = True


class MqttFuzzer(Fuzzer):
    def __init__(self, device: Device, mqtt: HostMqtt, reader: MicroPythonJson, timeout: float = 10.0) -> None:
        super().__init__(device, reader, timeout)
        self.mq = mqtt
        for leaf in ("state", "error", "pong"):
            mqtt.subscribe(self.topic(leaf), qos=0)

    def topic(self, leaf: str) -> str:
        return f"{self.dev.base}/{leaf}"

    def send(self, leaf: str, payload: bytes) -> None:
        """One payload on <base>/<leaf>, then a barrier on the same topic."""
        want = judge_mqtt(leaf, payload, self.reader)
        self.begin(payload)
        since, msince = self.dev.log.cursor, self.mq.log.cursor
        self.mq.publish(self.topic(leaf), payload)
        bid = self.ids()
        self.mq.publish(self.topic(leaf), json.dumps({"id": bid}))  # refused on set, a pong on ping
        answer_topic = self.topic("error" if leaf == "set" else "pong")
        try:
            bar = self.mq.log.wait_for(
                lambda e: e.topic == answer_topic and e.get("id") == bid, self.timeout, f"MQTT barrier {bid}", msince
            )
        except WaitTimeout as e:
            status = [e.data for e in self.dev.log.events(since) if e.kind not in ANSWERS]
            self.dead = f"the device stopped answering on MQTT after {payload[:200]!r}: {e}; it said {status}"
            self.check_alive()
            raise
        mine = (self.topic("state"), self.topic("error"), self.topic("pong"))
        got = [
            e for e in self.mq.log.events(msince) if e.index < bar.index and e.topic in mine and not e.get("_retained")
        ]
        assert len(got) == 1, f"{payload[:200]!r} on {leaf}: one answer wanted ({want}), got {[e.data for e in got]}"
        self.check_answer(got[0], want, payload)
        after = self.get()  # the console has everything written before the barrier
        console = [e for e in self.answers(since, after.index, "mqtt") if e.get("id") != bid]
        if want.kind == "change":
            assert [e.get("src") for e in console] == ["mqtt"], f"console for {payload[:200]!r}: {console}"
        elif want.kind == "error":
            assert [(e.kind, e.get("src")) for e in console] == [("error", "mqtt")], f"console: {console}"
        else:
            assert console == [], f"console for {payload[:200]!r}: {console}"
        assert state_of(after) == self.light.as_tuple(), f"after {payload[:200]!r} the light is {after.data}"
        self.synced = True


def report(request: pytest.FixtureRequest, f: Fuzzer) -> None:
    request.node.user_properties.append(("fuzz_cases", f.cases))
    if f.excused:
        request.node.user_properties.append(("fuzz_console_dropped", f.excused))
    print(
        f"{request.node.name}: {f.cases} payloads, light now {f.light}"
        + (f", {f.excused} left unjudged (the console dropped their bytes)" if f.excused else "")
    )


def run(check: Callable[[], None], f: Fuzzer) -> None:
    check()
    f.check_alive()
    assert not [n for n in f.dev.link.noise if "Traceback" in n or "MemoryError" in n], f.dev.link.noise_tail(20)
    assert state_of(f.get()) == f.light.as_tuple()
    assert f.excused <= max(3, f.cases * MAX_EXCUSED), (
        f"the console dropped bytes in {f.excused} of {f.cases} examples: the device stops reading it too long"
    )
