"""Hypothesis strategies: commands valid and not, encoded in every way, and garbage."""

from __future__ import annotations

import json
import os
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from fuzz.oracle import CTRL_C, MAX_LEN, id_ok

EXAMPLES = int(os.environ.get("LIGHTCTL_FUZZ_EXAMPLES", "300"))

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
