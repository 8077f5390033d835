"""The serial link, end to end: a real Unix-port interpreter under a real pty."""

from __future__ import annotations

import pytest

from host_harness.core.events import WaitTimeout
from host_harness.core.ticks import ticks_diff
from host_harness.dut.device import CommandError, Device
from host_harness.measure.journeys import Journeys


def test_info_reports_firmware_board_and_ticks_period(device: Device) -> None:
    info = device.fetch_info()
    assert info["version"]
    assert info["board"] == device.board["name"]
    assert info["ticks_period"] in (2**30, 2**62) or info["ticks_period"] & (info["ticks_period"] - 1) == 0
    assert info["device_id"]


def test_serial_journey_applies_and_confirms_exactly_that_command(device: Device) -> None:
    js = Journeys(device)
    j = js.via_serial("ON", 77)
    assert (j.state, j.brightness, j.src) == ("ON", 77, "serial")
    assert j.e2e_ms > 0
    # device steps are in order: received, pin written, report handed over
    assert 0 <= j.rx_to_pin_ms <= j.rx_to_tx_ms
    st = device.get()
    assert (st.get("state"), st.get("brightness"), st.get("seq")) == ("ON", 77, j.seq)


@pytest.mark.needs_sim_pin
def test_pin_follows_state_and_brightness(device: Device) -> None:
    device.set("ON", 128)
    pin = device.get().get("pin")
    assert pin == {"level": 1, "duty_u16": 128 * 257}
    device.set("OFF")
    assert device.get().get("pin") == {"level": 0, "duty_u16": 0}
    device.set(brightness=10)  # Home Assistant: a brightness alone turns the light on
    st = device.get()
    assert (st.get("state"), st.get("pin")) == ("ON", {"level": 1, "duty_u16": 10 * 257})
    device.set(brightness=0)  # zero is dark: OFF, the last brightness kept for ON
    st = device.get()
    assert (st.get("state"), st.get("brightness"), st.get("pin")["level"]) == ("OFF", 10, 0)


@pytest.mark.needs_process  # a fresh boot
def test_sequence_starts_at_one_and_counts_every_change(device: Device) -> None:
    seqs = [int(device.set(s).get("seq")) for s in ("ON", "OFF", "ON", "ON")]
    assert seqs == [1, 2, 3, 4]


def test_ping_answers_with_device_ticks(device: Device) -> None:
    t0, pong = device.ping()
    assert isinstance(pong.get("ticks"), int)
    assert pong.host_ns > t0
    period = int(device.info["ticks_period"])
    assert ticks_diff(pong.get("ticks"), pong.get("t_rx"), period) >= 0


BAD_LINES: list[tuple[bytes, str]] = [
    (b"{not json", "bad_json"),
    (b"[1,2,3]", "bad_json"),
    (b'"just a string"', "bad_json"),
    (b'{"op":"set","id":"b1","state":"BLUE"}', "bad_state"),
    (b'{"op":"set","id":"b2","state":true}', "bad_state"),
    (b'{"op":"set","id":"b3","brightness":"high"}', "bad_brightness"),
    (b'{"op":"set","id":"b4","brightness":256}', "bad_brightness"),
    (b'{"op":"set","id":"b5","brightness":-1}', "bad_brightness"),
    (b'{"op":"set","id":"b6","brightness":12.5}', "bad_brightness"),
    (b'{"op":"set","id":"b7","state":"ON","colour":"red"}', "unknown_field"),
    (b'{"op":"set","id":"b8"}', "empty_command"),
    (b'{"op":"dance","id":"b9"}', "unknown_op"),
    (b'{"id":"b10","state":"ON"}', "no_op"),
    (b'{"op":"set","id":"a b\\"c","state":"ON"}', "bad_id"),
    (b'{"op":"set","id":' + b'"' + b"x" * 100 + b'","state":"ON"}', "bad_id"),
    (b"\xff\xfe\xfd{}", "bad_utf8"),
    (b'{"op":"set","state":"ON","pad":"' + b"x" * 600 + b'"}', "too_long"),
    (b"[" * 200 + b"]" * 200, "bad_json"),
]


@pytest.mark.parametrize(("line", "code"), BAD_LINES, ids=[c for _, c in BAD_LINES])
def test_bad_input_is_answered_with_an_error_and_changes_nothing(device: Device, line: bytes, code: str) -> None:
    before = device.get()
    since = device.log.cursor
    device.link.write_raw(line + b"\n")
    err = device.log.wait_for(lambda e: e.kind == "error", 5, f"an error event for {line[:40]!r}", since)
    assert err.get("code") == code
    assert not [e for e in device.log.events(since) if e.kind == "change"]
    after = device.get()
    for k in ("seq", "state", "brightness"):
        assert after.get(k) == before.get(k)
    # and the device still obeys a valid command afterwards
    assert device.set("ON").get("state") == "ON"


def test_error_names_the_command_id(device: Device) -> None:
    with pytest.raises(CommandError) as e:
        device.request("set", state="MAYBE", id="cmd-42")
    assert e.value.event.get("id") == "cmd-42"
    assert e.value.event.get("code") == "bad_state"


def test_garbage_bytes_and_blank_lines_do_not_break_the_link(device: Device) -> None:
    junk = bytes(range(4, 256)) + b"\r\n\n\r" + b"\x00" * 50 + b"\n"
    device.link.write_raw(junk)
    device.link.write_raw(b"{}" * 10 + b"\n\n\n")
    assert device.set("ON", 5).get("brightness") == 5


def test_a_wait_that_times_out_names_what_it_waited_for(device: Device) -> None:
    with pytest.raises(WaitTimeout, match="gadget"):
        device.log.wait_for(lambda e: False, 0.2, "a gadget that never comes")


@pytest.mark.needs_process
def test_ctrl_c_drops_to_the_repl_and_the_firmware_restarts_from_it(device: Device) -> None:
    device.set("ON", 42)
    text = device.interrupt()
    assert "KeyboardInterrupt" in text
    assert device.unix is not None and device.unix.alive
    # The traceback and banner were noise to the reader, which still works:
    device.link.write_raw(b"import app; app.main()\r")
    boot = device.log.wait_for(lambda e: e.kind == "boot", 10, "a boot event after app.main()")
    assert boot.get("board") == device.board["name"]
    # a fresh boot starts a fresh sequence; the pin starts dark
    ev = device.set("ON", 9)
    assert (ev.get("seq"), ev.get("brightness")) == (1, 9)


@pytest.mark.needs_process  # a heap of its own
def test_firmware_survives_a_long_run_in_the_default_heap(device: Device) -> None:
    """Memory holds steady in the default heap (unix_device.DEFAULT_HEAPSIZE):
    no growth across 300 commands."""
    first = device.fetch_info()
    for i in range(300):
        device.set("ON" if i % 2 else "OFF", i % 255 + 1)
    last = device.fetch_info()
    assert last["mem_alloc"] <= first["mem_alloc"] + 2048, (first["mem_alloc"], last["mem_alloc"])
    assert device.unix is not None and device.unix.alive
