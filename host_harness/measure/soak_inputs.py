"""Soak inputs: a seeded mix of valid and invalid commands over serial and MQTT, and garbage bytes."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from host_harness.image.firmware_constants import firmware_int

MAX_LEN = firmware_int("protocol", "MAX_LEN")  # the firmware's longest serial line / MQTT payload
CTRL_C = 3
LINE_ENDS = (10, 13)


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


def dumps_line(obj: Any) -> bytes:
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
        p = dumps_line({"op": "set", "id": cid, **fields})
        return Item("serial", "serial set", p, "change", cid, state=state, brightness=bri)

    def mqtt_set(self) -> Item:
        cid = self.uid("m")
        fields, state, bri = self._set_fields()
        return Item("mqtt", "mqtt set", dumps_line({"id": cid, **fields}), "change", cid, state=state, brightness=bri)

    def serial_query(self) -> Item:
        cid = self.uid("q")
        op, reply = self.rng.choice((("get", "state"), ("ping", "pong"), ("info", "info")))
        return Item("serial", "serial get/ping/info", dumps_line({"op": op, "id": cid}), "reply", cid, reply=reply)

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
        return Item("serial", "serial invalid field", dumps_line(obj), "error", cid, code)

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
        full = dumps_line({"op": "set", "id": self.uid("t"), "state": "ON", "brightness": self.rng.randint(0, 255)})
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
        full = dumps_line({"op": "set", "id": self.uid("u"), "state": "ON"})
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
            return Item("mqtt", "mqtt invalid field", dumps_line(obj), "error", cid, code)
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
