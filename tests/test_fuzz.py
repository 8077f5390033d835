"""Hostile input, property-based: the real interpreter against generated input.

Hypothesis generates commands (valid and invalid, JSON-valid and not) and
garbage (random bytes, truncated, oversized, deeply nested, non-UTF-8), sends
them on the serial line and on MQTT to ONE Unix-port device per test, and
checks every answer against a model of the protocol:

- each nonempty serial line / each MQTT payload gets exactly one answer: an
  error for an invalid command (with the command's id when the id is valid),
  the change, pong, state or info for a valid one;
- a valid set is applied exactly as asked (state, brightness, next seq);
- nothing else changes the light; the device never crashes and keeps obeying.

Each example ends with a barrier whose answer is known (a serial ``get``; on
MQTT a payload on the same topic), so every answer is matched to its payload.
The number of examples per test is ``LIGHTCTL_FUZZ_EXAMPLES`` (default 300).

How a payload parses is asked of MicroPython's own json (in a helper
interpreter): it reads some input that is not strict JSON (a trailing comma, a
missing separator, a key without a value), and the firmware obeys what it reads.

The serial fuzz never sends byte 0x03: Ctrl-C stops the firmware by design.
Over MQTT it is an ordinary byte and is sent.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import string
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from host_harness import children
from host_harness.core.events import Event, WaitTimeout
from host_harness.core.ids import IdMaker
from host_harness.dut.device import Device
from host_harness.dut.unix_device import find_micropython
from host_harness.link.mqtt_client import HostMqtt
from host_harness.pytest_plugin import DeviceFactory

EXAMPLES = int(os.environ.get("LIGHTCTL_FUZZ_EXAMPLES", "300"))
MAX_LEN = 512  # the firmware's longest serial line / MQTT payload
MAX_ID = 64
MAX_BRACKETS = 8  # more "[" and "{" than this: refused before parsing
ID_CHARS = string.ascii_letters + string.digits + "-_.:"
CTRL_C = b"\x03"
LINE_END = re.compile(rb"[\r\n]")
ANSWERS = ("change", "error", "pong", "state", "info", "ack")

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,  # nothing written into the repository
    print_blob=True,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
        HealthCheck.large_base_example,
        HealthCheck.function_scoped_fixture,
    ],
)


# -- the protocol, as a model --------------------------------------------------
@dataclass(frozen=True)
class Expect:
    """The one answer a line or payload must get."""

    kind: str  # "error", "change", "pong", "state", "info", "ack"
    code: str | None = None  # for errors; None: an error of any code
    cid: str | None = None  # the valid command id the answer carries
    state: bool | None = None  # for a change: what was asked
    brightness: int | None = None


def id_ok(i: object) -> bool:
    return isinstance(i, str) and 0 < len(i) <= MAX_ID and all(c in ID_CHARS for c in i)


def mp_utf8_ok(data: bytes) -> bool:
    """MicroPython's UTF-8 check (py/unicode.c utf8_check): the structure of
    the sequences only; overlong forms and surrogates pass, as on the device."""
    need = 0
    for c in data:
        if need:
            if c & 0xC0 != 0x80:
                return False
            need -= 1
        elif c >= 0xC0:
            if c >= 0xF8:
                return False
            need = (0xE5 >> ((c >> 3) & 6)) & 3
        elif c >= 0x80:
            return False
    return need == 0


# The JSON parsing itself is MicroPython's (more lenient than the standard:
# trailing commas, missing separators, keys without values and the like are
# read, not refused), so the model asks a MicroPython interpreter how it reads
# each input, and models everything after the parse itself.
MP_JSON = """
import sys, json, binascii
KNOWN = ("op", "id", "state", "brightness", "t")
def desc(v):
    if isinstance(v, bool):
        return "b1" if v else "b0"
    if v is None:
        return "n"
    if isinstance(v, int):
        return "i" + str(v)
    if isinstance(v, str):
        return "s" + binascii.hexlify(v.encode()).decode()
    return "f" if isinstance(v, float) else "c"
while True:
    line = sys.stdin.buffer.readline()
    if not line:
        break
    try:
        obj = json.loads(binascii.unhexlify(line.strip()))
    except ValueError:
        print("E")
        continue
    if not isinstance(obj, dict):
        print("N")
        continue
    print(" ".join(["D"] + [k + "=" + desc(obj[k]) if isinstance(k, str) and k in KNOWN else "x" for k in obj]))
"""


class MicroPythonJson:
    """json.loads in a MicroPython interpreter, described back key by key."""

    def __init__(self) -> None:
        self.proc = children.spawn(
            [find_micropython(), "-c", MP_JSON], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0
        )
        atexit.register(self.proc.kill)

    def loads(self, data: bytes) -> dict[str, Any] | None:
        """A stand-in for the object MicroPython reads from data; None if it
        reads no JSON object (the firmware refuses both alike: bad_json)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(data.hex().encode() + b"\n")
        reply = self.proc.stdout.readline().decode().split()
        if not reply:
            raise RuntimeError(f"the MicroPython JSON reader died on {data[:200]!r}")
        if reply[0] != "D":
            return None
        obj: dict[str, Any] = {}
        for n, tok in enumerate(reply[1:]):
            if tok == "x":
                obj[f"\x00other{n}"] = 0  # a key no command has
            else:
                k, v = tok.split("=", 1)
                obj[k] = _mp_value(v)
        return obj


def _mp_value(v: str) -> Any:
    kind, text = v[0], v[1:]
    if kind == "s":
        return bytes.fromhex(text).decode("utf-8", "surrogateescape")
    if kind == "i":
        return int(text)
    if kind == "b":
        return text == "1"
    return {"n": None, "f": 0.5, "c": []}[kind]  # a float or a container: no valid field value


_mp_json: MicroPythonJson | None = None


def mp_json() -> MicroPythonJson:
    global _mp_json
    if _mp_json is None:
        _mp_json = MicroPythonJson()
    return _mp_json


def _state_fields(obj: dict[str, Any], allowed: tuple[str, ...], cid: str | None) -> Expect:
    for k in obj:
        if k not in allowed:
            return Expect("error", "unknown_field", cid)
    state = None
    if "state" in obj:
        s = obj["state"]
        if not isinstance(s, str) or s not in ("ON", "OFF"):
            return Expect("error", "bad_state", cid)
        state = s == "ON"
    bri = None
    if "brightness" in obj:
        b = obj["brightness"]
        if type(b) is not int:
            return Expect("error", "bad_brightness", cid)
        if not 0 <= b <= 255:
            return Expect("error", "bad_brightness", cid)
        bri = b
    if state is None and bri is None:
        return Expect("error", "empty_command", cid)
    return Expect("change", None, cid, state, bri)


def _decode(data: bytes) -> tuple[Expect | None, Any]:
    if len(data) > MAX_LEN:
        return Expect("error", "too_long"), None
    if not mp_utf8_ok(data):
        return Expect("error", "bad_utf8"), None
    if data.count(b"[") + data.count(b"{") > MAX_BRACKETS:
        return Expect("error", "bad_json"), None
    obj = mp_json().loads(data)
    if obj is None:
        return Expect("error", "bad_json"), None
    return None, obj


def judge_serial_line(line: bytes) -> Expect:
    refused, obj = _decode(line)
    if refused:
        return refused
    i = obj.get("id")
    if i is not None and not id_ok(i):
        return Expect("error", "bad_id")
    cid = i
    op = obj.get("op")
    plain = {"get": "state", "info": "info", "press": "ack"}
    if isinstance(op, str) and op == "set":
        return _state_fields(obj, ("op", "id", "state", "brightness"), cid)
    if isinstance(op, str) and op == "ping":
        fields: tuple[str, ...] = ("op", "id", "t")
    elif isinstance(op, str) and op in plain:
        fields = ("op", "id")
    elif op is None:
        return Expect("error", "no_op", cid)
    else:
        return Expect("error", "unknown_op", cid)
    if any(k not in fields for k in obj):
        return Expect("error", "unknown_field", cid)
    return Expect(plain.get(op, "pong"), None, cid)


def judge_serial(payload: bytes) -> list[Expect]:
    """One expectation per nonempty line: CR and LF both end a line."""
    return [judge_serial_line(x) for x in LINE_END.split(payload) if x]


def judge_mqtt(leaf: str, payload: bytes) -> Expect:
    refused, obj = _decode(payload)
    if refused:
        return refused
    i = obj.get("id")
    if i is not None and not id_ok(i):
        return Expect("error", "bad_id")
    if leaf == "ping":
        if any(k not in ("id", "t") for k in obj):
            return Expect("error", "unknown_field", i)
        return Expect("pong", None, i)
    return _state_fields(obj, ("state", "brightness", "id"), i)


@dataclass
class Light:
    """What the device's light must be: state, brightness and sequence number."""

    seq: int
    on: bool
    brightness: int

    @classmethod
    def of(cls, ev: Event) -> Light:
        return cls(int(ev.get("seq")), ev.get("state") == "ON", int(ev.get("brightness")))

    def apply(self, state: bool | None, brightness: int | None) -> None:
        on = self.on if state is None else state
        if brightness is not None:
            if brightness == 0:
                on = False  # dark; the last non-zero brightness is kept
            else:
                self.brightness = brightness
                if state is None:
                    on = True  # a brightness alone turns the light on
        self.on = on
        self.seq += 1

    def as_tuple(self) -> tuple[int, str, int]:
        return (self.seq, "ON" if self.on else "OFF", self.brightness)


def state_of(ev: Event) -> tuple[int, str, int]:
    return (int(ev.get("seq")), str(ev.get("state")), int(ev.get("brightness")))


# -- strategies ----------------------------------------------------------------
json_leaf = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10)
    | st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=2)  # lone surrogates
)
json_values = st.recursive(
    json_leaf, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3), max_leaves=6
)
valid_ids = st.from_regex(r"[A-Za-z0-9_.:\-]{1,64}", fullmatch=True)
bad_ids = st.one_of(
    st.just(""),
    st.from_regex(r"[A-Za-z0-9]{65,80}", fullmatch=True),
    st.text(min_size=1, max_size=12).filter(lambda s: not id_ok(s)),
    json_values.filter(lambda v: v is not None and not isinstance(v, str)),
)
ids = st.one_of(valid_ids, valid_ids, bad_ids, st.none())
states = st.one_of(
    st.sampled_from(["ON", "OFF"]),
    st.sampled_from(["ON", "OFF"]),
    st.sampled_from(["on", "Off", "", "ON ", " OFF", "TOGGLE", "null", "\u041eN"]),
    json_values,
)
brightnesses = st.one_of(
    st.integers(0, 255),
    st.integers(0, 255),
    st.sampled_from([-1, 256, 1000, 10**20, -(10**20), True, False, 0.0, 1.0, 255.0, "5", None]),
    st.integers(),
    json_values,
)
serial_ops = st.one_of(
    st.sampled_from(["set", "set", "set", "get", "ping", "info"]),
    st.sampled_from(["SET", "Set", " set", "dance", "", "pressed", "\u0455et"]),
    json_values,
)
extra_keys = st.dictionaries(
    st.one_of(st.sampled_from(["t", "op", "x", "colour", "ID", "State"]), st.text(max_size=8)),
    json_values,
    max_size=2,
)
valid_sets = st.fixed_dictionaries(
    {"op": st.just("set")},
    optional={"id": valid_ids, "state": st.sampled_from(["ON", "OFF"]), "brightness": st.integers(0, 255)},
).filter(lambda d: "state" in d or "brightness" in d)
valid_mqtt_sets = st.fixed_dictionaries(
    {}, optional={"id": valid_ids, "state": st.sampled_from(["ON", "OFF"]), "brightness": st.integers(0, 255)}
).filter(lambda d: "state" in d or "brightness" in d)


@st.composite
def any_commands(draw: st.DrawFn, ops: st.SearchStrategy[Any] | None) -> dict[str, Any]:
    """An object with some of the command fields, any values, maybe extra keys."""
    optional: dict[str, st.SearchStrategy[Any]] = {"id": ids, "state": states, "brightness": brightnesses}
    if ops is not None:
        optional["op"] = ops
    obj = draw(st.fixed_dictionaries({}, optional=optional))
    if draw(st.integers(0, 9)) == 0:
        obj.update(draw(extra_keys))
    items = draw(st.permutations(list(obj.items())))
    return dict(items)


def serial_commands() -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(valid_sets, any_commands(serial_ops), any_commands(serial_ops))


def mqtt_commands() -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(valid_mqtt_sets, any_commands(None), any_commands(st.sampled_from(["set", "get"]) | json_values))


@st.composite
def encoded(draw: st.DrawFn, obj: Any) -> bytes:
    """JSON text in any standard form: escapes or raw UTF-8, spacing, padding."""
    text = json.dumps(
        obj,
        ensure_ascii=draw(st.booleans()),
        separators=draw(st.sampled_from([(",", ":"), (", ", ": "), (" ,", " :"), ("\t,\t", "\t:\t")])),
    )
    if draw(st.integers(0, 9)) == 0:  # near the length limit
        pad = max(0, draw(st.integers(MAX_LEN - 3, MAX_LEN + 3)) - len(text.encode("utf-8", "surrogatepass")))
        left = draw(st.integers(0, pad))
        text = " " * left + text + " " * (pad - left)
    return text.encode("utf-8", "surrogatepass")


BAD_UTF8 = [b"\xff", b"\xfe", b"\x80", b"\xbf\xbf", b"\xc3\x28", b"\xe2\x82", b"\xe2\x28\xa1", b"\xf8\x88\x80\x80\x80"]


@st.composite
def garbage(draw: st.DrawFn) -> bytes:
    """Bytes that are not a command: random, truncated, nested, oversized, non-UTF-8."""
    kind = draw(st.sampled_from(["binary", "truncated", "nested", "oversized", "non_utf8", "control", "text"]))
    if kind == "binary":
        return draw(st.binary(max_size=700))
    if kind == "control":
        return draw(st.binary(max_size=60).map(lambda b: bytes(x % 32 for x in b)))
    if kind == "text":
        return draw(st.text(max_size=200)).encode("utf-8", "surrogatepass")
    if kind == "truncated":
        full = draw(encoded(draw(valid_sets)))
        full = full.strip()  # a prefix of an object never closes it
        return full[: draw(st.integers(1, len(full) - 1))]
    if kind == "nested":
        depth = draw(st.integers(1, 600))
        close = draw(st.sampled_from([depth, depth, 0, max(0, depth - 1), depth + 1]))
        inner = draw(
            st.sampled_from(
                [
                    b"[" * depth + b"]" * close,
                    b'{"a":' * depth + b"1" + b"}" * close,
                    b'{"op":"set","state":' + b"[" * depth + b"]" * close + b"}",
                    b'{"op":"set","brightness":' + b'{"b":' * depth + b"1" + b"}" * close + b"}",
                    b'{"state":' + b"[{" * depth + b"}]" * close + b"}",
                ]
            )
        )
        return inner
    if kind == "oversized":
        n = draw(st.integers(MAX_LEN + 1, 3000))
        head = b'{"op":"set","state":"ON","pad":"'
        return draw(st.sampled_from([head + b"x" * (n - len(head) - 2) + b'"}', b"{" * n, b" " * n + b"{}"]))
    full = draw(encoded(draw(serial_commands())))  # non_utf8
    at = draw(st.integers(0, len(full)))
    return full[:at] + draw(st.sampled_from(BAD_UTF8)) + full[at:]


@st.composite
def serial_garbage(draw: st.DrawFn) -> bytes:
    """One or more garbage lines; never Ctrl-C."""
    parts = draw(st.lists(garbage(), min_size=1, max_size=4))
    seps = [draw(st.sampled_from([b"\n", b"\r", b"\r\n", b"\n\n", b"\r\r\n"])) for _ in parts]
    return b"".join(p + s for p, s in zip(parts, seps, strict=True)).replace(CTRL_C, b"")


@st.composite
def mqtt_garbage(draw: st.DrawFn) -> bytes:
    """Any bytes: Ctrl-C, line ends and NULs are ordinary bytes on MQTT."""
    kind = draw(st.integers(0, 4))
    if kind == 0:
        return draw(st.binary(max_size=300).map(lambda b: b.replace(b"\x04", CTRL_C)))
    if kind == 1:  # long: around and far past the limit (the MQTT client skips what it will not read)
        return b'{"state":"ON","x":"' + b"y" * draw(st.integers(MAX_LEN - 30, 3000)) + b'"}'
    if kind == 2:  # several "lines" in one payload
        return b"\n".join(draw(st.lists(garbage(), min_size=2, max_size=3)))
    return draw(garbage())


# -- the device side -------------------------------------------------------------
class Fuzzer:
    """Sends examples to one device and checks its answers; fails fast once dead."""

    def __init__(self, device: Device, timeout: float = 10.0) -> None:
        self.dev = device
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
    def send(self, payload: bytes) -> None:
        """One payload (one or more lines), then a get as a barrier."""
        assert CTRL_C not in payload
        want = judge_serial(payload)
        assume(all(w.kind != "ack" for w in want))  # a press toggles later: the storm tests cover it
        self.begin(payload)
        since = self.dev.log.cursor
        self.dev.link.write_raw(payload + b"\n")
        barrier = self.get()
        got = self.answers(since, barrier.index, "serial")
        assert len(got) == len(want), f"{payload[:200]!r}: {len(want)} answers wanted, got {[e.data for e in got]}"
        for g, w in zip(got, want, strict=True):
            self.check_answer(g, w, payload)
        assert state_of(barrier) == self.light.as_tuple(), f"after {payload[:200]!r} the light is {barrier.data}"
        self.synced = True


class MqttFuzzer(Fuzzer):
    def __init__(self, device: Device, mqtt: HostMqtt, timeout: float = 10.0) -> None:
        super().__init__(device, timeout)
        self.mq = mqtt
        for leaf in ("state", "error", "pong"):
            mqtt.subscribe(self.topic(leaf), qos=0)

    def topic(self, leaf: str) -> str:
        return f"{self.dev.base}/{leaf}"

    def send(self, leaf: str, payload: bytes) -> None:
        """One payload on <base>/<leaf>, then a barrier on the same topic."""
        want = judge_mqtt(leaf, payload)
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


def _report(request: pytest.FixtureRequest, f: Fuzzer) -> None:
    request.node.user_properties.append(("fuzz_cases", f.cases))
    print(f"{request.node.name}: {f.cases} payloads, light now {f.light}")


def _run(check: Callable[[], None], f: Fuzzer) -> None:
    check()
    f.check_alive()
    assert not [n for n in f.dev.link.noise if "Traceback" in n or "MemoryError" in n], f.dev.link.noise_tail(20)
    assert state_of(f.get()) == f.light.as_tuple()


# -- the tests -------------------------------------------------------------------
def test_serial_commands_are_applied_or_refused_as_specified(
    device_factory: DeviceFactory, request: pytest.FixtureRequest
) -> None:
    f = SerialFuzzer(device_factory())

    @FUZZ
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        obj = f.unique(data.draw(serial_commands(), "command"))
        f.send(data.draw(encoded(obj), "line"))

    _run(check, f)
    _report(request, f)


def test_serial_garbage_is_refused_line_by_line_and_changes_nothing(
    device_factory: DeviceFactory, request: pytest.FixtureRequest
) -> None:
    f = SerialFuzzer(device_factory())

    @FUZZ
    @given(payload=serial_garbage())
    def check(payload: bytes) -> None:
        f.send(payload)

    _run(check, f)
    _report(request, f)


def test_mqtt_commands_are_applied_or_refused_as_specified(
    device_factory: DeviceFactory, mqtt: HostMqtt, request: pytest.FixtureRequest
) -> None:
    dev = device_factory()
    dev.wait_mqtt()
    f = MqttFuzzer(dev, mqtt)

    @FUZZ
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        leaf = data.draw(st.sampled_from(["set", "set", "set", "ping"]), "topic")
        obj = f.unique(data.draw(mqtt_commands(), "command"))
        f.send(leaf, data.draw(encoded(obj), "payload"))

    _run(check, f)
    _report(request, f)


def test_mqtt_garbage_is_refused_and_changes_nothing(
    device_factory: DeviceFactory, mqtt: HostMqtt, request: pytest.FixtureRequest
) -> None:
    dev = device_factory()
    dev.wait_mqtt()
    f = MqttFuzzer(dev, mqtt)

    @FUZZ
    @given(leaf=st.sampled_from(["set", "set", "ping"]), payload=mqtt_garbage())
    def check(leaf: str, payload: bytes) -> None:
        f.send(leaf, payload)

    _run(check, f)
    _report(request, f)


# -- button storms ---------------------------------------------------------------
def _storm(dev: Device, presses: int, sets: int, timeout: float) -> tuple[list[Event], list[Event]]:
    """Queue ``presses`` presses at once (each bounces 3 times on press and on
    release), with ``sets`` serial sets pipelined in between; returns the
    answers to the presses and the button changes."""
    since = dev.log.cursor
    pids = [dev.ids() for _ in range(presses)]
    lines = [json.dumps({"op": "press", "id": p}).encode() + b"\n" for p in pids]
    for k in range(sets):
        cmd = {"op": "set", "id": dev.ids(), "brightness": k % 255 + 1}
        lines.insert(k * len(lines) // max(1, sets), json.dumps(cmd).encode() + b"\n")
    dev.link.write_raw(b"".join(lines))
    deadline = time.monotonic() + timeout
    while True:  # until every press toggled, or a press was refused, or the firmware died
        evs = dev.log.events(since)
        toggles = [e for e in evs if e.kind == "change" and e.get("src") == "button"]
        refused = [e for e in evs if e.kind == "error" and e.get("id") in pids]
        if len(toggles) >= presses or refused or _crashed(dev) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    time.sleep(0.3)  # a press toggling twice would show by now
    if not _crashed(dev):
        dev.get()  # and everything written before it is in the log
    evs = dev.log.events(since)
    answers = [e for e in evs if e.get("id") in pids]
    return answers, [e for e in evs if e.kind == "change" and e.get("src") == "button"]


def _crashed(dev: Device) -> list[str]:
    dead = [] if dev.unix is None or dev.unix.alive else ["the process exited"]
    return dead + [n for n in dev.link.noise if "Traceback" in n or "MemoryError" in n]


@pytest.mark.unix_only
def test_a_storm_of_bouncing_presses_toggles_once_per_press(device_factory: DeviceFactory) -> None:
    """Presses queued at once (they run one after another), alone and among
    serial commands: every press toggles the light exactly once."""
    dev = device_factory()
    dev.wait_mqtt()
    for presses, sets in ((1, 0), (6, 0), (8, 200)):
        before = dev.get()
        answers, toggles = _storm(dev, presses, sets, timeout=presses * 0.5 + 5)
        assert not _crashed(dev), dev.link.noise_tail(20)
        assert [e.kind for e in answers] == ["ack"] * presses, [e.data for e in answers]
        assert len(toggles) == presses, f"{presses} presses made {len(toggles)} toggles"
        after = dev.get()
        assert after.get("seq") == before.get("seq") + presses + sets
        want = before.get("state") if presses % 2 == 0 else ("OFF" if before.get("state") == "ON" else "ON")
        assert sets or after.get("state") == want


@pytest.mark.unix_only
def test_a_long_storm_of_presses_neither_crashes_nor_loses_a_press(
    device_factory: DeviceFactory, request: pytest.FixtureRequest
) -> None:
    """40 presses queued at once. The firmware may refuse presses it has no
    room for (with an error), but each press it accepts toggles exactly once."""
    dev = device_factory()
    dev.wait_mqtt()
    presses = 40
    answers, toggles = _storm(dev, presses, 0, timeout=presses * 0.5 + 5)
    assert not _crashed(dev), dev.link.noise_tail(20)
    acked = [e for e in answers if e.kind == "ack"]
    assert len(acked) + len([e for e in answers if e.kind == "error"]) == presses, [e.data for e in answers]
    assert len(toggles) == len(acked), f"{len(acked)} presses accepted, {len(toggles)} toggles"
    dev.get()


# -- heap leaks by input ---------------------------------------------------------
def test_ids_of_ever_new_characters_do_not_leak_the_heap(device_factory: DeviceFactory) -> None:
    """MicroPython interns every character it iterates out of a str, for good:
    an id check that walked the id's characters leaked ~18 bytes per character
    never seen before. 2400 new characters must leave the heap as it was."""
    dev = device_factory()
    dev.wait_mqtt()  # the link's buffers are allocated before the heap is first measured
    before = dev.fetch_info()
    lines = []
    for k in range(40):
        cid = "".join(chr(0x4E00 + 60 * k + i) for i in range(60))
        lines.append(json.dumps({"op": "set", "id": cid, "state": "ON"}, ensure_ascii=False).encode("utf-8"))
    since = dev.log.cursor
    for k in range(0, len(lines), 10):
        dev.link.write_raw(b"\n".join(lines[k : k + 10]) + b"\n")
        dev.ping()
    errors = [e.get("code") for e in dev.log.events(since) if e.kind in ANSWERS and e.kind != "pong"]
    assert errors == ["bad_id"] * len(lines)
    after = dev.fetch_info()
    assert after["mem_alloc"] <= before["mem_alloc"] + 1024, (before["mem_alloc"], after["mem_alloc"])
    assert after["mem_free"] >= before["mem_free"] - 1024
