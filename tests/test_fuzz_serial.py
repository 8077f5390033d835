"""Hostile input on the serial line, property-based: the real interpreter against generated input.

Hypothesis generates commands (valid and invalid, JSON-valid and not) and
garbage (random bytes, truncated, oversized, deeply nested, non-UTF-8), sends
them to ONE Unix-port device per test and checks every answer against the
model of the protocol in tests/fuzz/oracle.py: each nonempty line gets exactly
one answer; a valid set is applied exactly as asked; nothing else changes the
light; the device never crashes. Each example ends with a serial ``get`` as a
barrier. The serial fuzz never sends byte 0x03: Ctrl-C stops the firmware by
design. Examples per test: ``LIGHTCTL_FUZZ_EXAMPLES`` (default 300).
"""

from __future__ import annotations

import pytest
from fuzz.drivers import SerialFuzzer, report, run
from fuzz.oracle import mp_json
from fuzz.strategies import FUZZ, encoded, serial_commands, serial_garbage
from hypothesis import given
from hypothesis import strategies as st

from host_harness.pytest_plugin import DeviceFactory, LightctlOptions


@pytest.mark.needs_process  # a fresh device: its ids (made unique per test) were never seen
def test_serial_commands_are_applied_or_refused_as_specified(
    device_factory: DeviceFactory, lightctl: LightctlOptions, request: pytest.FixtureRequest
) -> None:
    f = SerialFuzzer(device_factory(), mp_json(lightctl.micropython))

    @FUZZ
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        obj = f.unique(data.draw(serial_commands(), "command"))
        f.send(data.draw(encoded(obj), "line"))

    run(check, f)
    report(request, f)


def test_serial_garbage_is_refused_line_by_line_and_changes_nothing(
    device_factory: DeviceFactory, lightctl: LightctlOptions, request: pytest.FixtureRequest
) -> None:
    f = SerialFuzzer(device_factory(), mp_json(lightctl.micropython))

    @FUZZ
    @given(payload=serial_garbage())
    def check(payload: bytes) -> None:
        f.send(payload)

    run(check, f)
    report(request, f)
