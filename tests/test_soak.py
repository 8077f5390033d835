"""A short soak in the default (ESP32-sized) heap: thousands of commands with random faults.

The same soak as ``benchmarks/soak.py`` (which runs 100 000 commands), cut to
``LIGHTCTL_SOAK_COMMANDS`` (default 5 000). ``LIGHTCTL_SOAK_SEED`` repeats a run.
"""

from __future__ import annotations

import itertools
import json
import os
import random

from host_harness.dut.device import Device
from host_harness.dut.unix_device import DEFAULT_HEAPSIZE
from host_harness.link.mqtt_client import HostMqtt
from host_harness.measure.soak import Soak
from host_harness.measure.soak_result import HEAP_SLACK
from host_harness.pytest_plugin import DeviceFactory, LightctlOptions

COMMANDS = int(os.environ.get("LIGHTCTL_SOAK_COMMANDS", "5000"))
HEAP = int(DEFAULT_HEAPSIZE.rstrip("k")) * 1024


def _device_small(device_factory: DeviceFactory, lightctl: LightctlOptions) -> Device:
    """The Unix port with an ESP32-sized heap; a board as it is."""
    dev = device_factory(heapsize=DEFAULT_HEAPSIZE) if lightctl.unix else device_factory()
    dev.wait_mqtt()
    if dev.unix is not None:
        info = dev.fetch_info()
        heap = info["mem_alloc"] + info["mem_free"]
        assert heap <= HEAP, f"the device's heap is {heap} B, not {DEFAULT_HEAPSIZE} ({dev.unix.build_note})"
    return dev


def test_soak_with_random_faults_in_an_esp32_sized_heap(
    device_factory: DeviceFactory, mqtt: HostMqtt, lightctl: LightctlOptions
) -> None:
    seed = int(os.environ.get("LIGHTCTL_SOAK_SEED") or random.randrange(2**32))
    dev = _device_small(device_factory, lightctl)
    s = Soak(dev, mqtt, seed=seed, sample_every=1000)
    res = s.run(COMMANDS)
    print(f"\nseed {seed}\n{res.heap_table()}\n{res.summary()}")
    why = f"(LIGHTCTL_SOAK_SEED={seed})\n{res.summary()}"
    assert res.alive, why
    assert not res.mqtt_drops, why
    assert not res.bad_noise, why
    assert not res.internal_errors, why
    assert not res.mismatches, why
    assert res.commands >= COMMANDS, why
    assert res.errors > 0 and res.mqtt_errors > 0 and res.changes > 0, why
    if dev.board.get("button"):
        assert res.presses > 0 and res.button_changes == res.presses, why
    first, last = res.samples[0], res.samples[-1]
    assert last.mem_alloc <= first.mem_alloc + HEAP_SLACK, why


def test_the_console_reports_changes_in_sequence_order(
    device_factory: DeviceFactory, mqtt: HostMqtt, lightctl: LightctlOptions
) -> None:
    """Serial commands pipelined while MQTT commands arrive: whatever the
    interleaving, the console must report the changes in the order of their
    sequence numbers (a host taking the last report as the state would
    otherwise hold a stale one)."""
    dev = _device_small(device_factory, lightctl)
    set_topic = f"{dev.base}/set"
    since = dev.log.cursor
    for rnd in range(5):
        lines = b"".join(
            json.dumps({"op": "set", "id": f"s{rnd}-{i}", "brightness": i % 255 + 1}).encode() + b"\n"
            for i in range(200)
        )
        for i in range(50):
            mqtt.publish(set_topic, json.dumps({"id": f"m{rnd}-{i}", "state": "ON" if i % 2 else "OFF"}))
        dev.link.write_raw(lines)
        dev.ping(timeout=30)
        dev.log.wait_for(lambda e, r=rnd: e.get("id") == f"m{r}-49", 30, f"the change of MQTT command m{rnd}-49")
        seqs = [int(e.get("seq")) for e in dev.log.events(since) if e.kind == "change"]
        if seqs != sorted(seqs):
            break
    late = [(a, b) for a, b in itertools.pairwise(seqs) if b < a]
    assert not late, f"{len(late)} changes reported after a later one, e.g. seq {late[0][1]} after {late[0][0]}"
