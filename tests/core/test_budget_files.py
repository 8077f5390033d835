"""Budget files: every board's default loads, a user's file overrides, bad files are clear errors."""

from __future__ import annotations

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
