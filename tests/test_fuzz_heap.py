"""Heap leaks by input: what a hostile input may cost the firmware's heap."""

from __future__ import annotations

import json

from host_harness.link.replies import ANSWERS
from host_harness.pytest_plugin import DeviceFactory


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
