"""Firmware constants are read from the firmware's source, never copied into the host."""

from __future__ import annotations

import importlib.util

import pytest

from host_harness.image.firmware_constants import firmware_constant, firmware_int
from host_harness.paths import FIRMWARE_DIR


def test_a_constant_matches_the_firmware_module_imported_in_cpython() -> None:
    # protocol.py imports in CPython: its value is the reference for the source reader.
    spec = importlib.util.spec_from_file_location("fw_protocol", FIRMWARE_DIR / "protocol.py")
    assert spec is not None and spec.loader is not None
    protocol = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(protocol)
    assert firmware_int("protocol", "MAX_LEN") == protocol.MAX_LEN
    assert firmware_constant("protocol", "MAX_ID") == protocol.MAX_ID


def test_const_wrapped_values_are_read() -> None:
    assert firmware_int("light", "_SEEN") > 0
    assert firmware_int("mqtt_keep", "_RETRY_MS") > 0


def test_a_missing_constant_is_named() -> None:
    with pytest.raises(LookupError, match=r"firmware/protocol\.py assigns no constant NO_SUCH"):
        firmware_constant("protocol", "NO_SUCH")
