"""The protocol as a model: what answer each serial line or MQTT payload must get.

The limits are the firmware's own (read from firmware/protocol.py). How a
payload parses is asked of MicroPython's own json in a helper interpreter
(the one the plugin's --lightctl-micropython names): it reads some input that is not
strict JSON, and the firmware obeys what it reads.
"""

from __future__ import annotations

import atexit
import re
import string
import subprocess
from dataclasses import dataclass
from typing import Any

from host_harness import children
from host_harness.core.events import Event
from host_harness.dut.unix_device import find_micropython
from host_harness.image.firmware_constants import firmware_constant, firmware_int
from host_harness.link.replies import REPLY_KIND

MAX_LEN = firmware_int("protocol", "MAX_LEN")  # the firmware's longest serial line / MQTT payload
MAX_ID = firmware_int("protocol", "MAX_ID")
MAX_BRACKETS = firmware_int("protocol", "MAX_BRACKETS")  # more "[" and "{" than this: refused before parsing
ID_CHARS = string.ascii_letters + string.digits + str(firmware_constant("protocol", "_ID_PUNCT"))
CTRL_C = b"\x03"
LINE_END = re.compile(rb"[\r\n]")


@dataclass(frozen=True)
class Expect:
    """The one answer a line or payload must get."""

    kind: str  # "error", "change", "pong", "state", "info", "ack", "heap"
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

    def __init__(self, micropython: str | None = None) -> None:
        self.proc = children.spawn(
            [find_micropython(micropython), "-c", MP_JSON], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0
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


_readers: dict[str | None, MicroPythonJson] = {}


def mp_json(micropython: str | None = None) -> MicroPythonJson:
    """The JSON reader of the given interpreter (the plugin's --lightctl-micropython), started once."""
    if micropython not in _readers:
        _readers[micropython] = MicroPythonJson(micropython)
    return _readers[micropython]


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


def _decode(data: bytes, reader: MicroPythonJson) -> tuple[Expect | None, Any]:
    if len(data) > MAX_LEN:
        return Expect("error", "too_long"), None
    if not mp_utf8_ok(data):
        return Expect("error", "bad_utf8"), None
    if data.count(b"[") + data.count(b"{") > MAX_BRACKETS:
        return Expect("error", "bad_json"), None
    obj = reader.loads(data)
    if obj is None:
        return Expect("error", "bad_json"), None
    return None, obj


def judge_serial_line(line: bytes, reader: MicroPythonJson) -> Expect:
    refused, obj = _decode(line, reader)
    if refused:
        return refused
    i = obj.get("id")
    if i is not None and not id_ok(i):
        return Expect("error", "bad_id")
    cid = i
    op = obj.get("op")
    if isinstance(op, str) and op == "set":
        return _state_fields(obj, ("op", "id", "state", "brightness"), cid)
    if isinstance(op, str) and op == "ping":
        fields: tuple[str, ...] = ("op", "id", "t")
    elif isinstance(op, str) and op in REPLY_KIND:
        fields = ("op", "id")
    elif op is None:
        return Expect("error", "no_op", cid)
    else:
        return Expect("error", "unknown_op", cid)
    if any(k not in fields for k in obj):
        return Expect("error", "unknown_field", cid)
    return Expect(REPLY_KIND[op], None, cid)


def judge_serial(payload: bytes, reader: MicroPythonJson) -> list[Expect]:
    """One expectation per nonempty line: CR and LF both end a line."""
    return [judge_serial_line(x, reader) for x in LINE_END.split(payload) if x]


def judge_mqtt(leaf: str, payload: bytes, reader: MicroPythonJson) -> Expect:
    refused, obj = _decode(payload, reader)
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
