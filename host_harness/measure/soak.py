"""Soak: thousands of commands with random faults, against a device in a small heap.

Mostly serial commands, pipelined: a batch is written at once, then a barrier
ping whose pong says everything before it was processed. Mixed in: commands
over MQTT (closed by a barrier of their own on the same topic), invalid JSON,
invalid fields, non-UTF-8 bytes, oversized lines and payloads, random garbage,
blank lines and button presses. After each batch every valid command's change
is checked by its id, every invalid one must have been answered by exactly one
error and the sequence numbers must count every change. The heap is sampled
(``info`` runs gc.collect first) every ``sample_every`` commands.

``benchmarks/soak.py`` runs it from the command line (100 000 commands);
``tests/test_soak.py`` runs a short version of the same soak.
"""

from __future__ import annotations

import random
import time

from host_harness.core.events import Event, WaitTimeout
from host_harness.dut.device import CommandError, Device
from host_harness.link.mqtt_client import HostMqtt
from host_harness.link.replies import ANSWERS
from host_harness.measure.progress import Progress
from host_harness.measure.soak_inputs import Generator, Item, dumps_line
from host_harness.measure.soak_result import HeapSample, SoakResult

WINDOW = 4096  # events kept per log: a batch is checked right after its barrier


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
        window: int = WINDOW,
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
        # (``window`` per log) is enough and keeps every wait cheap.
        device.log.keep_last(window)
        if mqtt is not None:
            mqtt.log.keep_last(window)
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
            lines.insert(self.rng.randint(0, len(lines)), dumps_line({"op": "press", "id": press_id}) + b"\n")
        bar = self.gen.uid("b")
        try:
            self.dev.link.write_raw(b"".join(lines) + dumps_line({"op": "ping", "id": bar}) + b"\n")
        except WaitTimeout as e:
            res.mismatches.append(f"batch {self.n_batch}: {e}{self._console_drops()}")
            self.stopped = True
            return
        mbar = None
        if self.mq is not None:
            set_topic = self.topic("set")
            for it in mqtt:
                self.mq.publish(set_topic, it.payload)
            mbar = self.gen.uid("mb")
            self.mq.publish(set_topic, dumps_line({"id": mbar}))  # refused (empty_command): a barrier
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

    def _console_drops(self) -> str:
        """What the device says its console dropped, for an error message."""
        try:
            n = self.dev.request("info", self.timeout)[1].get("rx_dropped")
        except (CommandError, WaitTimeout) as e:
            return f"; info afterwards failed: {e}"
        return "" if n is None else f"; the console dropped {n} bytes so far"

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
