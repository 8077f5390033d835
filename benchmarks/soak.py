"""Soak: 100 000 commands with random faults under -X heapsize=64k.

Mostly serial commands, pipelined: a batch is written at once, then a barrier
ping whose pong says everything before it was processed. Mixed in: commands
over MQTT (closed by a barrier of their own on the same topic), invalid JSON,
invalid fields, non-UTF-8 bytes, oversized lines and payloads, random garbage,
blank lines and button presses. After each batch every valid command's change
is checked by its id, every invalid one must have been answered by exactly one
error and the sequence numbers must count every change. The heap is sampled
(``info`` runs gc.collect first) every ``--sample-every`` commands.

    python benchmarks/soak.py [--commands 100000] [--seed N] [--heapsize 64k] [--broker URL]

``tests/test_soak.py`` runs a short version of the same soak.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from host_harness.core.events import Event, EventLog, WaitTimeout
from host_harness.core.table import render
from host_harness.dut.device import CommandError, Device
from host_harness.link.mqtt_client import HostMqtt
from host_harness.measure.progress import Progress

MAX_LEN = 512  # the firmware's longest serial line / MQTT payload
WINDOW = 4096  # events kept per log: a batch is checked right after its barrier
HEAP_SLACK = 4096  # bytes the heap may differ between the first and last sample
CTRL_C = 3
LINE_ENDS = (10, 13)
ANSWERS = ("change", "error", "pong", "state", "info", "ack")


@dataclass
class Item:
    """One command of the soak and what the device must answer."""

    via: str  # "serial" or "mqtt"
    kind: str  # generator name, for the summary
    payload: bytes
    expect: str  # "change", "error", "reply" or "nothing"
    cid: str | None = None  # the id the answer carries, if any
    code: str | None = None  # the error code, when it is certain
    reply: str = ""  # the reply's event kind for "reply"
    state: str | None = None  # expected state after a change
    brightness: int | None = None  # expected brightness after a change, when certain


@dataclass
class HeapSample:
    commands: int
    elapsed_s: float
    mem_alloc: int
    mem_free: int
    errors: int
    changes: int


@dataclass
class SoakResult:
    commands: int = 0
    batches: int = 0
    duration_s: float = 0.0
    samples: list[HeapSample] = field(default_factory=list)
    by_kind: dict[str, int] = field(default_factory=dict)
    changes: int = 0
    errors: int = 0
    mqtt_errors: int = 0
    presses: int = 0
    button_changes: int = 0
    out_of_order: int = 0  # changes reported on the console after a later change
    mqtt_drops: list[str] = field(default_factory=list)  # why the device's MQTT link went down
    mqtt_unchecked: int = 0  # MQTT commands sent while the link dropped, not checked
    internal_errors: list[dict[str, Any]] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)
    alive: bool = True
    bad_noise: list[str] = field(default_factory=list)

    @property
    def heap_growth(self) -> int:
        if len(self.samples) < 2:
            return 0
        return self.samples[-1].mem_alloc - self.samples[0].mem_alloc

    @property
    def ok(self) -> bool:
        return (
            self.alive
            and not self.mismatches
            and not self.internal_errors
            and not self.bad_noise
            and not self.mqtt_drops
            and self.presses == self.button_changes
            and self.heap_growth <= HEAP_SLACK
        )

    def heap_table(self) -> str:
        base = self.samples[0].mem_alloc if self.samples else 0
        rows = [
            [s.commands, f"{s.elapsed_s:.1f}", s.mem_alloc, s.mem_free, s.mem_alloc - base, s.errors, s.changes]
            for s in self.samples
        ]
        return render(["commands", "time s", "mem_alloc", "mem_free", "growth", "errors", "changes"], rows)

    def summary(self) -> str:
        allocs = [s.mem_alloc for s in self.samples] or [0]
        frees = [s.mem_free for s in self.samples] or [0]
        rate = self.commands / self.duration_s if self.duration_s else 0.0
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.by_kind.items(), key=lambda kv: -kv[1]))
        lines = [
            f"commands: {self.commands} in {self.batches} batches, {self.duration_s:.1f} s ({rate:.0f}/s)",
            f"  {kinds}",
            f"answers: {self.changes} changes, {self.errors} serial errors, {self.mqtt_errors} MQTT errors, "
            f"{self.button_changes}/{self.presses} presses toggled; "
            f"{self.out_of_order} changes reported on the console after a later one",
            f"heap: mem_alloc min {min(allocs)} max {max(allocs)}, growth {self.heap_growth:+d} B; "
            f"mem_free min {min(frees)}",
            f"MQTT link dropped: {len(self.mqtt_drops)} {self.mqtt_drops[:3]}; "
            f"{self.mqtt_unchecked} MQTT commands around the drops not checked",
            f"internal errors: {len(self.internal_errors)}; mismatches: {len(self.mismatches)}; "
            f"MemoryError/Traceback on the console: {len(self.bad_noise)}; process alive: {self.alive}",
        ]
        lines += [f"  mismatch: {m}" for m in self.mismatches[:10]]
        lines += [f"  internal: {e}" for e in self.internal_errors[:5]]
        lines += [f"  console: {n}" for n in self.bad_noise[:5]]
        return "\n".join(lines)


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _garbage(rng: random.Random, n: int, serial: bool) -> bytes:
    """Random bytes; on the serial line without Ctrl-C and line ends."""
    data = rng.randbytes(n)
    if serial:
        data = bytes(b for b in data if b != CTRL_C and b not in LINE_ENDS) or b"?"
    return data


class Generator:
    """Draws soak items: valid and invalid commands for both transports."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.n = 0
        serial: list[tuple[Callable[[], Item], int]] = [
            (self.serial_set, 50),
            (self.serial_query, 6),
            (self.serial_bad_field, 6),
            (self.serial_bad_id, 2),
            (self.serial_bad_json, 4),
            (self.serial_bad_utf8, 2),
            (self.serial_too_long, 2),
            (self.serial_garbage, 5),
            (self.serial_blank, 1),
            (self.mqtt_set, 8),
            (self.mqtt_bad, 6),
        ]
        self.makers = [m for m, _ in serial]
        self.weights = [w for _, w in serial]

    def uid(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n}"

    def __call__(self) -> Item:
        return self.rng.choices(self.makers, self.weights)[0]()

    # -- valid commands ------------------------------------------------------
    def _set_fields(self) -> tuple[dict[str, Any], str, int | None]:
        rng = self.rng
        state = rng.choice(("ON", "OFF"))
        r = rng.random()
        if r < 0.6:
            b = rng.randint(1, 255)
            return {"state": state, "brightness": b}, state, b
        if r < 0.75:
            return {"state": state}, state, None
        if r < 0.9:
            b = rng.randint(1, 255)
            return {"brightness": b}, "ON", b  # a brightness alone turns the light on
        fields: dict[str, Any] = {"brightness": 0}  # zero is dark, whatever the state says
        if rng.random() < 0.5:
            fields["state"] = state
        return fields, "OFF", None

    def serial_set(self) -> Item:
        cid = self.uid("s")
        fields, state, bri = self._set_fields()
        p = _dumps({"op": "set", "id": cid, **fields})
        return Item("serial", "serial set", p, "change", cid, state=state, brightness=bri)

    def mqtt_set(self) -> Item:
        cid = self.uid("m")
        fields, state, bri = self._set_fields()
        return Item("mqtt", "mqtt set", _dumps({"id": cid, **fields}), "change", cid, state=state, brightness=bri)

    def serial_query(self) -> Item:
        cid = self.uid("q")
        op, reply = self.rng.choice((("get", "state"), ("ping", "pong"), ("info", "info")))
        return Item("serial", "serial get/ping/info", _dumps({"op": op, "id": cid}), "reply", cid, reply=reply)

    # -- invalid commands ----------------------------------------------------
    def _bad_field(self, cid: str, serial: bool) -> tuple[dict[str, Any], str]:
        rng = self.rng
        op = {"op": "set"} if serial else {}
        choices: list[tuple[dict[str, Any], str]] = [
            (
                {**op, "id": cid, "state": rng.choice(["on", "BLUE", "", 1, None, True, ["ON"], {"s": "ON"}])},
                "bad_state",
            ),
            (
                {**op, "id": cid, "brightness": rng.choice([256, -1, 1000, 10**12, "7", 1.5, True, None, [1]])},
                "bad_brightness",
            ),
            ({**op, "id": cid, "state": "ON", rng.choice(["colour", "effect", "x", "ON"]): "red"}, "unknown_field"),
            ({**op, "id": cid}, "empty_command"),
        ]
        if serial:
            choices += [
                ({"op": rng.choice(["dance", "SET", "", 7, None]), "id": cid}, "unknown_op"),
                ({"id": cid, "state": "ON"}, "no_op"),
                ({"op": rng.choice(["get", "ping", "info", "press"]), "id": cid, "extra": 1}, "unknown_field"),
            ]
        else:
            choices.append(({"op": "set", "id": cid, "state": "ON"}, "unknown_field"))
        obj, code = rng.choice(choices)
        if obj.get("op", "") is None:  # "op": null is no op at all
            code = "no_op"
        return obj, code

    def serial_bad_field(self) -> Item:
        cid = self.uid("e")
        obj, code = self._bad_field(cid, serial=True)
        return Item("serial", "serial invalid field", _dumps(obj), "error", cid, code)

    def _unicode(self, n: int) -> str:
        """Characters from all over Unicode (no surrogates): mostly never seen before."""
        out = []
        for _ in range(n):
            cp = self.rng.randint(0xA0, 0x2FFFF)
            out.append(chr(cp if not 0xD800 <= cp < 0xE000 else cp + 0x800))
        return "".join(out)

    def serial_bad_id(self) -> Item:
        rng = self.rng
        bad = rng.choice(["", "a b", "x" * 65, 5, "a/b", "semi;colon", True, ["id"], None])
        if bad is None:  # new characters, raw UTF-8 or escaped
            bad = self._unicode(rng.randint(1, 40))
        obj = {"op": "set", "id": bad, "state": "ON"}
        p = json.dumps(obj, ensure_ascii=rng.random() < 0.5, separators=(",", ":")).encode()
        return Item("serial", "serial invalid id", p, "error", None, "bad_id")

    def _truncated(self) -> bytes:
        full = _dumps({"op": "set", "id": self.uid("t"), "state": "ON", "brightness": self.rng.randint(0, 255)})
        return full[: self.rng.randint(1, len(full) - 1)]

    def serial_bad_json(self) -> Item:
        rng = self.rng
        depth = rng.randint(1, 250)
        p = rng.choice(
            [
                self._truncated(),
                b"[" * depth + b"]" * depth,
                b"[" * depth,
                b'{"a":' * (depth // 5 + 1) + b"1" + b"}" * (depth // 5 + 1),  # an object, but no op
                b'{"op":"set","state":' + b"[" * depth + b"]" * depth + b"}",
                b'"just a string"',
                b"12345",
                b"null",
                b"{oops",
            ]
        )
        return Item("serial", "serial invalid JSON", p, "error")

    def serial_bad_utf8(self) -> Item:
        full = _dumps({"op": "set", "id": self.uid("u"), "state": "ON"})
        at = self.rng.randint(0, len(full))
        bad = self.rng.choice([b"\xff", b"\xc3\x28", b"\x80", b"\xfe\xfe", b"\xf8\x88\x80\x80\x80"])
        return Item("serial", "serial non-UTF-8", full[:at] + bad + full[at:], "error", None, "bad_utf8")

    def serial_too_long(self) -> Item:
        n = self.rng.randint(MAX_LEN + 1, 3000)
        if self.rng.random() < 0.5:
            head = b'{"op":"set","state":"ON","pad":"'
            p = head + b"x" * (n - len(head) - 2) + b'"}'
        else:
            p = _garbage(self.rng, n, serial=True)
            p += b"x" * (n - len(p))
        return Item("serial", "serial oversized line", p, "error", None, "too_long")

    def serial_garbage(self) -> Item:
        return Item("serial", "serial garbage bytes", _garbage(self.rng, self.rng.randint(1, 300), True), "error")

    def serial_blank(self) -> Item:
        return Item("serial", "serial blank line", self.rng.choice([b"", b"\r", b"\r\n"]), "nothing")

    def mqtt_bad(self) -> Item:
        rng = self.rng
        r = rng.random()
        if r < 0.4:
            cid = self.uid("f")
            obj, code = self._bad_field(cid, serial=False)
            return Item("mqtt", "mqtt invalid field", _dumps(obj), "error", cid, code)
        if r < 0.7:  # anything goes over MQTT: Ctrl-C, line ends, NULs
            return Item("mqtt", "mqtt garbage", _garbage(rng, rng.randint(0, 300), serial=False), "error")
        if r < 0.75:  # new characters, deep nesting
            obj = {"id": self._unicode(rng.randint(1, 40)), "state": "ON"}
            return Item(
                "mqtt", "mqtt invalid id", json.dumps(obj, ensure_ascii=False).encode(), "error", None, "bad_id"
            )
        if r < 0.8:
            depth = rng.randint(5, 240)
            p = b'{"state":' + b"[" * depth + b"]" * depth + b"}"
            return Item("mqtt", "mqtt deep nesting", p, "error")
        if r < 0.9:
            n = rng.randint(MAX_LEN + 1, 4000)
            return Item(
                "mqtt", "mqtt oversized payload", b'{"state":"ON","x":"' + b"y" * n + b'"}', "error", None, "too_long"
            )
        return Item("mqtt", "mqtt invalid JSON", self._truncated(), "error")


class Soak:
    """Drives the soak against one device (and its MQTT side, when given)."""

    def __init__(
        self,
        device: Device,
        mqtt: HostMqtt | None,
        seed: int = 1,
        batch: int = 100,
        sample_every: int = 5000,
        press_every: int = 10,
        timeout: float = 30.0,
    ) -> None:
        self.dev = device
        self.mq = mqtt
        self.rng = random.Random(seed)
        self.gen = Generator(self.rng)
        self.batch = batch
        self.sample_every = sample_every
        self.press_every = press_every
        self.timeout = timeout
        self.result = SoakResult()
        self.t0 = 0.0
        self.first_seq = 0  # seq before the soak
        self.max_seq = 0
        self.seqs: set[int] = set()
        self.press_open: str | None = None  # id of a press whose toggle is still to come
        self.checked = device.log.cursor  # index of the last serial event checked
        self.n_batch = 0
        self.stopped = False  # a barrier never came: the run cannot go on
        # Each batch is checked right after its barrier: a short window of events
        # is enough and keeps every wait cheap.
        device.link.log = EventLog(device.log.name, keep=WINDOW)
        if mqtt is not None:
            mqtt.log = EventLog(mqtt.log.name, keep=WINDOW)
            for leaf in ("state", "error"):
                mqtt.subscribe(self.topic(leaf), qos=0)

    def topic(self, leaf: str) -> str:
        return f"{self.dev.base}/{leaf}"

    # -- the run -------------------------------------------------------------
    def run(self, total: int, progress: Progress | None = None) -> SoakResult:
        res = self.result
        st = self.dev.get()
        self.first_seq = self.max_seq = int(st.get("seq"))
        self.checked = self.dev.log.cursor
        self.t0 = time.monotonic()
        self._batch(min(self.batch, total))  # warm-up: lazily made buffers settle
        if not self.stopped:
            self._sample()
        next_sample = res.commands + self.sample_every
        if progress:
            progress.update(res.commands)
        while res.commands < total and not self.stopped:
            done = res.commands
            self._batch(min(self.batch, total - res.commands))
            if self.stopped:
                break  # a barrier never came: nothing more to learn
            if res.commands >= next_sample or res.commands >= total:
                self._sample()
                next_sample += self.sample_every
            if progress:
                progress.update(res.commands - done, f"{len(res.mismatches)} mismatches")
            if len(res.mismatches) > 50:
                break  # enough evidence
            if self.dev.unix is not None and not self.dev.unix.alive:
                res.mismatches.append("the device process died")
                break
        if not self.stopped:
            self._finish_press()
            self._check_seqs()
        res.duration_s = time.monotonic() - self.t0
        res.alive = self.dev.unix is None or self.dev.unix.alive
        res.bad_noise = [n for n in self.dev.link.noise if "MemoryError" in n or "Traceback" in n]
        return res

    def _sample(self) -> None:
        res = self.result
        try:
            info = self.dev.request("info", self.timeout)[1]
        except CommandError as e:
            res.mismatches.append(f"info after {res.commands} commands: {e}")
            return
        res.samples.append(
            HeapSample(
                res.commands,
                time.monotonic() - self.t0,
                int(info.get("mem_alloc")),
                int(info.get("mem_free")),
                res.errors + res.mqtt_errors,
                res.changes,
            )
        )

    def _finish_press(self) -> None:
        """Wait for the toggle of a press still under way, and count it."""
        if self.press_open is None:
            return
        try:
            self.dev.log.wait_for(
                lambda e: e.kind == "change" and e.get("src") == "button",
                self.timeout,
                f"the toggle of press {self.press_open}",
                self.checked,
            )
        except TimeoutError as e:
            self.result.mismatches.append(str(e))
        self._check_changes(self._new_events())
        self.press_open = None

    def _new_events(self) -> list[Event]:
        """Serial events not yet checked (every event is checked exactly once)."""
        evs = self.dev.log.events(self.checked)
        if evs:
            if evs[0].index != self.checked + 1:
                self.result.mismatches.append(f"events {self.checked + 1}..{evs[0].index - 1} fell out of the window")
            self.checked = evs[-1].index
        return evs

    # -- one batch -----------------------------------------------------------
    def _batch(self, n: int) -> None:
        res = self.result
        self.n_batch += 1
        items: list[Item] = []
        while len(items) < n:
            it = self.gen()
            if it.via == "serial" or self.mq is not None:
                items.append(it)
        press_id = None
        if self.press_open is None and self.dev.board.get("button") and self.n_batch % self.press_every == 0:
            press_id = self.gen.uid("p")
        since = self.dev.log.cursor
        msince = self.mq.log.cursor if self.mq else 0
        serial = [it for it in items if it.via == "serial"]
        mqtt = [it for it in items if it.via == "mqtt"]
        lines = [it.payload + b"\n" for it in serial]
        if press_id:
            lines.insert(self.rng.randint(0, len(lines)), _dumps({"op": "press", "id": press_id}) + b"\n")
        bar = self.gen.uid("b")
        self.dev.link.write_raw(b"".join(lines) + _dumps({"op": "ping", "id": bar}) + b"\n")
        mbar = None
        if self.mq is not None:
            set_topic = self.topic("set")
            for it in mqtt:
                self.mq.publish(set_topic, it.payload)
            mbar = self.gen.uid("mb")
            self.mq.publish(set_topic, _dumps({"id": mbar}))  # refused (empty_command): a barrier
        try:
            self.dev.log.wait_for(
                lambda e: e.kind == "pong" and e.get("id") == bar, self.timeout, f"barrier {bar}", since
            )
        except WaitTimeout as e:
            said = [x.data for x in self.dev.log.events(since) if x.kind not in ANSWERS]
            res.mismatches.append(f"batch {self.n_batch}: {e}; the device said {said}")
            self._note_drops(self.dev.log.events(since))
            self.stopped = True
            return
        mqtt_lost = False
        if self.mq is not None:
            try:
                self._mqtt_barrier(mbar, since, msince)
            except WaitTimeout as e:
                mqtt_lost = True
                self._await_reconnect(since, str(e))
                if self.stopped:
                    return
        evs = self._new_events()
        self._note_drops(evs)
        if mqtt_lost or any(e.kind == "mqtt" and e.get("status") == "disconnected" for e in evs):
            # The link went down: which MQTT commands were lost cannot be told.
            res.mqtt_unchecked += len(mqtt)
            mqtt = []
            mbar = None
        mevs = self.mq.log.events(msince) if self.mq and mbar else []
        self._check_batch(serial, mqtt, evs, mevs, mbar)
        if press_id:
            self.press_open = press_id
            res.presses += 1
            if not any(e.kind == "ack" and e.get("id") == press_id for e in evs):
                res.mismatches.append(f"press {press_id} not acknowledged")
        if self.press_open and any(e.kind == "change" and e.get("src") == "button" for e in evs):
            self.press_open = None
        res.commands += n + (1 if press_id else 0)
        res.batches += 1
        for it in items:
            res.by_kind[it.kind] = res.by_kind.get(it.kind, 0) + 1
        if press_id:
            res.by_kind["press"] = res.by_kind.get("press", 0) + 1

    def _mqtt_barrier(self, mbar: str | None, since: int, msince: int) -> None:
        """Waits for the MQTT barrier's error report and its console copy; gives
        up early (WaitTimeout) when the device reports its MQTT link down."""
        assert self.mq is not None
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                self.mq.log.wait_for(
                    lambda e: e.topic == self.topic("error") and e.get("id") == mbar,
                    0.5,
                    f"MQTT barrier {mbar}",
                    msince,
                )
                break
            except WaitTimeout:
                down = [e for e in self.dev.log.events(since) if e.kind == "mqtt" and e.get("status") == "disconnected"]
                if down or time.monotonic() > deadline:
                    raise
        # the barrier's own error is mirrored on the console before its MQTT report
        self.dev.log.wait_for(
            lambda e: e.kind == "error" and e.get("id") == mbar, self.timeout, f"console copy of {mbar}", since
        )

    def _await_reconnect(self, since: int, why: str) -> None:
        """After a lost MQTT barrier: the link must have dropped and come back."""
        try:
            self.dev.log.wait_for(
                lambda e: e.kind == "mqtt" and e.get("status") == "connected",
                self.timeout,
                "the device's MQTT link back up",
                since,
            )
        except WaitTimeout as e:
            said = [x.data for x in self.dev.log.events(since) if x.kind not in ANSWERS]
            self.result.mismatches.append(f"batch {self.n_batch}: {why}; then {e}; the device said {said}")
            self.stopped = True

    def _note_drops(self, evs: list[Event]) -> None:
        for e in evs:
            if e.kind == "mqtt" and e.get("status") == "disconnected":
                self.result.mqtt_drops.append(str(e.get("detail")))

    def _check_changes(self, evs: list[Event]) -> None:
        """Collects every change's sequence number, whatever its source."""
        res = self.result
        for e in evs:
            if e.kind != "change":
                continue
            seq = int(e.get("seq"))
            if seq in self.seqs:
                res.mismatches.append(f"change {e.get('id')}: seq {seq} seen twice")
            self.seqs.add(seq)
            if seq < self.max_seq:
                res.out_of_order += 1
            self.max_seq = max(self.max_seq, seq)
            res.changes += 1
            if e.get("src") == "button":
                res.button_changes += 1

    def _check_seqs(self) -> None:
        """Every change took the next sequence number: no gaps, none twice."""
        if self.seqs:
            missing = set(range(self.first_seq + 1, self.max_seq + 1)) - self.seqs
            if missing:
                self.result.mismatches.append(f"{len(missing)} sequence numbers never seen, e.g. {min(missing)}")

    def _check_batch(
        self, serial: list[Item], mqtt: list[Item], evs: list[Event], mevs: list[Event], mbar: str | None
    ) -> None:
        res = self.result
        self._check_changes(evs)
        by_id: dict[str, list[Event]] = {}
        for e in evs:
            i = e.get("id")
            if isinstance(i, str):
                by_id.setdefault(i, []).append(e)
        errors = [e for e in evs if e.kind == "error" and e.get("src") != "mqtt"]
        mirrored = [e for e in evs if e.kind == "error" and e.get("src") == "mqtt"]
        res.internal_errors += [e.data for e in evs if e.kind == "error" and e.get("code") == "internal"]
        res.errors += len(errors)
        want_errors = sum(1 for it in serial if it.expect == "error")
        if len(errors) != want_errors:
            res.mismatches.append(f"batch {self.n_batch}: {len(errors)} serial errors for {want_errors} invalid lines")
        for it in serial + mqtt:
            self._check_item(it, by_id.get(it.cid or "", []))
        if self.mq is None or mbar is None:
            return  # no MQTT, or its link dropped during the batch
        m_errors = [e for e in mevs if e.topic == self.topic("error")]
        res.mqtt_errors += len(m_errors) - 1  # less the barrier
        want = sum(1 for it in mqtt if it.expect == "error") + 1
        if len(m_errors) != want or len(mirrored) != want:
            res.mismatches.append(
                f"batch {self.n_batch}: {len(m_errors)} MQTT error reports and {len(mirrored)} on the console "
                f"for {want - 1} invalid payloads and the barrier"
            )
        m_states = {e.get("id"): e for e in mevs if e.topic == self.topic("state") and not e.get("_retained")}
        for it in mqtt:
            if it.expect == "change" and it.cid not in m_states:
                res.mismatches.append(f"MQTT command {it.cid}: no state report on {self.topic('state')}")

    def _check_item(self, it: Item, evs: list[Event]) -> None:
        res = self.result
        if it.expect == "change":
            ch = [e for e in evs if e.kind == "change"]
            if len(ch) != 1:
                res.mismatches.append(f"{it.kind} {it.cid}: {len(ch)} changes, events {[e.data for e in evs]}")
                return
            d = ch[0].data
            if d.get("state") != it.state or (it.brightness is not None and d.get("brightness") != it.brightness):
                res.mismatches.append(f"{it.kind} {it.payload!r} applied as {d}")
            if d.get("src") != it.via:
                res.mismatches.append(f"{it.kind} {it.cid}: src {d.get('src')!r}")
        elif it.expect == "reply":
            if not [e for e in evs if e.kind == it.reply]:
                res.mismatches.append(f"{it.kind} {it.cid}: no {it.reply} reply, events {[e.data for e in evs]}")
        elif it.expect == "error" and it.cid:
            errs = [e for e in evs if e.kind == "error"]
            if it.via == "mqtt":
                errs = [e for e in errs if e.get("src") == "mqtt"]
            if len(errs) != 1 or (it.code and errs[0].get("code") != it.code):
                res.mismatches.append(
                    f"{it.kind} {it.payload[:80]!r}: wanted one {it.code}, got {[e.data for e in evs]}"
                )
        if it.expect != "change" and [e for e in evs if e.kind == "change"]:
            res.mismatches.append(f"{it.kind} {it.payload[:80]!r} changed the light")


def main() -> int:
    from host_harness.broker.start import start_broker
    from host_harness.dut.device import open_device

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--commands", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--batch", type=int, default=100, help="commands written before each barrier")
    ap.add_argument("--sample-every", type=int, default=5000, help="commands between heap samples")
    ap.add_argument("--heapsize", default="64k")
    ap.add_argument("--broker", default=None, help="mqtt://... or mosquitto / amqtt (default: mosquitto if installed)")
    ap.add_argument("--no-mqtt", action="store_true", help="serial only, no broker")
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    broker = None if args.no_mqtt else start_broker(args.broker)
    try:
        if broker:
            print(f"broker: {broker.describe()}")
        dev = open_device("unix", "unix", broker.info if broker else None, heapsize=args.heapsize)
        mq = None
        try:
            if broker:
                dev.wait_mqtt()
                mq = HostMqtt(broker.info, "soak").connect()
            print(f"device {dev.device_id}, heap {args.heapsize}, seed {seed}")
            soak = Soak(dev, mq, seed=seed, batch=args.batch, sample_every=args.sample_every)
            bar = Progress(args.commands, "soak")
            try:
                res = soak.run(args.commands, bar)
            finally:
                bar.close()
        finally:
            if mq:
                mq.close()
            dev.close()
    finally:
        if broker:
            broker.stop()
    print()
    print(res.heap_table())
    print()
    print(res.summary())
    print("\nOK" if res.ok else "\nFAILED")
    return 0 if res.ok else 1


if __name__ == "__main__":
    sys.exit(main())
