"""Device ticks wrap (2**30 us on an ESP32); differences must survive it.

The unix board can emulate a short ticks period and a start near the wrap
point, so wraps happen inside a test run.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from host_harness.dut import boards
from host_harness.link.mqtt_client import HostMqtt
from host_harness.measure.journeys import Journeys
from host_harness.pytest_plugin import DeviceFactory

pytestmark = pytest.mark.unix_only

PERIOD = 2**20  # 1.05 s


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
