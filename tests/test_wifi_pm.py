"""Wi-Fi power save: the device reports its mode in info, and a run warns when
the budget assumes another (the largest tail on a real ESP32 is a sleeping radio)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from host_harness.core import budgets
from host_harness.dut import boards
from host_harness.dut.device import Device
from host_harness.pytest_plugin import DeviceFactory

pytestmark = pytest.mark.unix_only


def test_the_device_reports_power_save_off_by_default_as_the_esp32_budget_assumes(device: Device) -> None:
    assumed = budgets.for_board(boards.load("esp32-devkitc")).assumes["wifi_pm"]
    assert device.fetch_info()["wifi_pm"] == assumed


def test_the_device_reports_the_configured_power_save(device_factory: DeviceFactory) -> None:
    dev = device_factory(config={"wifi": {"pm": "max"}})
    assert dev.fetch_info()["wifi_pm"] == "max"


def test_run_warns_when_the_budget_assumes_another_power_save(tmp_path: Path) -> None:
    f = tmp_path / "assumes.toml"
    f.write_text('[assumes]\nwifi_pm = "min"\n')
    r = subprocess.run(
        [sys.executable, "-m", "host_harness", "run", "--journeys", "serial", "--count", "3", "--budget", str(f)],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "assumes wifi_pm = 'min', the device reports 'none'" in r.stdout, r.stdout
