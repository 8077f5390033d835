"""Firmware constants are read from the firmware's source, never copied into the host."""

from __future__ import annotations

import ast
import importlib.util

import pytest

from host_harness.image.firmware_constants import firmware_constant, firmware_int
from host_harness.link.replies import REPLY_KIND
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


def test_the_host_knows_the_reply_to_every_op_the_console_takes() -> None:
    # The ops are read from the firmware's dispatcher (each `op == "name"`), so an op added there
    # without its reply kind in host_harness/link/replies.py fails here, not as a timeout later.
    tree = ast.parse((FIRMWARE_DIR / "serial_link.py").read_text())
    ops = {
        c.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Compare) and isinstance(node.left, ast.Name) and node.left.id == "op"
        for c in node.comparators
        if isinstance(c, ast.Constant) and isinstance(c.value, str)
    }
    assert ops >= {"set", "ping"}, f"the dispatcher was not found: {sorted(ops)}"
    assert ops == set(REPLY_KIND)
