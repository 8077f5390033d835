"""Budget files: every board's default loads, a user's file overrides, bad files are clear errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from host_harness.core import budgets
from host_harness.dut import boards
from host_harness.paths import BOARDS_DIR


def test_every_board_has_a_loadable_default_budget() -> None:
    for name in boards.names():
        b = budgets.for_board(boards.load(name))
        for kind in ("mqtt", "serial", "button"):
            jb = b.for_kind(kind)
            assert jb.total.get("p50", 0) > 0 and jb.total.get("p99", 0) >= jb.total["p50"], (name, kind)


def test_a_users_file_overrides_limit_by_limit(tmp_path: Path) -> None:
    f = tmp_path / "mine.toml"
    f.write_text("[journey.mqtt]\np99 = 7.5\nlost = 2\n")
    b = budgets.for_board(boards.load("unix"), f)
    board_mqtt = budgets.load_file(BOARDS_DIR / "unix.budget.toml").for_kind("mqtt")
    assert b.for_kind("mqtt").total == {**board_mqtt.total, "p99": 7.5} and b.for_kind("mqtt").lost == 2
    assert b.for_kind("serial").total == budgets.load_file(BOARDS_DIR / "unix.budget.toml").for_kind("serial").total


@pytest.mark.parametrize(
    ("text", "msg"),
    [
        ("[journey.mqtt]\np42 = 1\n", "unknown key 'p42'"),
        ("[journey.mqtt.hops.warp_drive]\np50 = 1\n", "unknown hop 'warp_drive'"),
        ("[journey.mqtt.hops.device_apply]\nmedian = 1\n", "unknown metric 'median'"),
        ("[journey.mqtt\n", "budget file"),
    ],
)
def test_a_bad_budget_file_is_a_clear_error(tmp_path: Path, text: str, msg: str) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ValueError, match=msg):
        budgets.load_file(f)


def test_a_budget_names_the_wifi_power_save_it_assumes_and_a_device_reporting_another_is_warned_of(
    tmp_path: Path,
) -> None:
    esp32 = budgets.for_board(boards.load("esp32-devkitc"))
    assert esp32.assumes == {"wifi_pm": "none"}
    assert budgets.assumption_warnings(esp32, {"wifi_pm": "none"}) == []
    assert budgets.assumption_warnings(esp32, {}) == []  # a device that does not report it is not held to it
    (w,) = budgets.assumption_warnings(esp32, {"wifi_pm": "max"})
    assert "wifi_pm = 'none'" in w and "'max'" in w
    f = tmp_path / "mine.toml"
    f.write_text('[assumes]\nwifi_pm = "min"\n')
    assert budgets.for_board(boards.load("esp32-devkitc"), f).assumes == {"wifi_pm": "min"}  # laid over


@pytest.mark.parametrize(
    ("text", "msg"),
    [
        ('[assumes]\nwifi_pm = "sometimes"\n', "wifi_pm = 'sometimes': must be one of none, min, max"),
        ('[assumes]\nbaud = "115200"\n', "[assumes] baud: unknown"),
        ('assumes = "none"\n', "assumes must be a table"),
    ],
)
def test_a_bad_assumption_is_a_clear_error(tmp_path: Path, text: str, msg: str) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ValueError, match=re.escape(msg)):
        budgets.load_file(f)
