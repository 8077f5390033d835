"""Device ticks wrap (2**30 us on an ESP32); differences must survive it.

The unix board can emulate a short ticks period and a start near the wrap
point, so wraps happen inside a test run. The harness's own ticks_diff is
checked against the interpreter's: MicroPython's ``time.ticks_diff`` at its
native period, and the firmware's clock.diff at the periods it emulates.
"""

from __future__ import annotations

import json
import random
import subprocess
import time
from pathlib import Path

import pytest

from host_harness.core.ticks import ticks_diff
from host_harness.dut import boards
from host_harness.dut.unix_device import find_micropython
from host_harness.link.mqtt_client import HostMqtt
from host_harness.measure.journeys import Journeys
from host_harness.paths import FIRMWARE_DIR
from host_harness.pytest_plugin import DeviceFactory, LightctlOptions

pytestmark = pytest.mark.needs_config  # a board with emulated short ticks

PERIOD = 2**20  # 1.05 s

# Reads "period a b" lines; answers each with the interpreter's difference a - b
# (period 0: time.ticks_diff at the native period, else the firmware's emulated one).
MP_DIFFS = """
import sys, time
sys.path.insert(0, sys.argv[1])
import clock
print(time.ticks_add(0, -1) + 1)
emulated = 0
for line in sys.stdin:
    p, a, b = (int(x) for x in line.split())
    if p == 0:
        print(time.ticks_diff(a, b))
        continue
    if p != emulated:
        clock.emulate(period=p)
        emulated = p
    print(clock.diff(a, b))
"""


def _pairs(period: int, rng: random.Random) -> list[tuple[int, int]]:
    edges = [0, 1, 2, period // 2 - 1, period // 2, period // 2 + 1, period - 2, period - 1]
    pairs = [(a, b) for a in edges for b in edges]
    pairs += [(rng.randrange(period), rng.randrange(period)) for _ in range(200)]
    return pairs


def _interpreter_diffs(micropython: str, queries: list[tuple[int, int, int]]) -> tuple[int, list[int]]:
    r = subprocess.run(
        [micropython, "-c", MP_DIFFS, str(FIRMWARE_DIR)],
        input="".join(f"{p} {a} {b}\n" for p, a, b in queries),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr
    native, *diffs = (int(x) for x in r.stdout.split())
    assert len(diffs) == len(queries), r.stdout[-500:] + r.stderr
    return native, diffs


def test_the_harness_ticks_diff_is_the_interpreters(lightctl: LightctlOptions) -> None:
    micropython = find_micropython(lightctl.micropython)
    native, _ = _interpreter_diffs(micropython, [])
    rng = random.Random(8)
    queries = [(0, a, b) for a, b in _pairs(native, rng)]
    for period in (2**30, PERIOD):  # an ESP32's, and the shortest the unix board emulates
        queries += [(period, a, b) for a, b in _pairs(period, rng)]
    _, diffs = _interpreter_diffs(micropython, queries)
    for (p, a, b), want in zip(queries, diffs, strict=True):
        assert ticks_diff(a, b, p or native) == want, (p or native, a, b)


def test_device_timestamps_stay_ordered_across_three_wraps(
    tmp_path: Path, device_factory: DeviceFactory, mqtt: HostMqtt
) -> None:
    b = boards.load("unix")
    b["ticks"] = {"period": PERIOD, "start": PERIOD - 200_000}  # first wrap 0.2 s after boot
    bf = tmp_path / "unix-wrap.json"
    bf.write_text(json.dumps(b))
    dev = device_factory(board=str(bf))
    assert dev.info["ticks_period"] == PERIOD
    dev.wait_mqtt()
    js = Journeys(dev, mqtt)
    wraps = 0
    last = None
    t_end = time.monotonic() + 3.6
    n = 0
    while time.monotonic() < t_end:
        j = js.via_mqtt("ON" if n % 2 else "OFF")
        n += 1
        assert 0 <= j.dev_t_rx < PERIOD
        assert 0 <= j.rx_to_pin_ms <= j.rx_to_tx_ms < 100
        if last is not None and j.dev_t_rx < last:
            wraps += 1
        last = j.dev_t_rx
        time.sleep(0.01)
    assert wraps >= 3, f"only {wraps} wraps seen in {n} journeys"
