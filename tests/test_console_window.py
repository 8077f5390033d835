"""The console at ESP32 sizes: a 260-byte buffer (plus the 128-byte FIFO) with
no flow control, replies paced at 115200 baud. The Unix-port board emulates it
(board option "console"); the host keeps within the window the device
announces, and loses nothing; without the window, bytes are lost."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from host_harness.core.events import WaitTimeout
from host_harness.dut import boards
from host_harness.dut.device import Device
from host_harness.link.credit import CreditWindow, is_reply, split_lines
from host_harness.pytest_plugin import DeviceFactory

pytestmark = pytest.mark.unix_only  # the console buffer is emulated by the Unix-port board layer

N = 40  # set commands written at once: some 2.4 kB, ten times what fits


@pytest.fixture
def esp32_console() -> str:
    b = boards.load("unix-esp32-console")
    assert b["console"]["rx_bytes"] <= 388 and b["console"]["paced_output"], b["console"]
    return "unix-esp32-console"


def _burst(dev: Device, tag: str) -> tuple[set[str], int]:
    """N set commands in one write; returns the ids confirmed and the count of
    errors, once the device has answered a final ping (sent on its own)."""
    since = dev.log.cursor
    ids = [f"{tag}{i}" for i in range(N)]
    lines = b"".join(
        json.dumps({"op": "set", "id": i, "brightness": k % 255 + 1}).encode() + b"\n" for k, i in enumerate(ids)
    )
    dev.link.write_raw(lines)
    # A ping is answered after every line before it was read; without the
    # window a ping may be lost in the burst too: ask again until one is.
    deadline = time.monotonic() + 30
    while True:
        try:
            dev.ping(timeout=1)
            break
        except WaitTimeout:
            assert time.monotonic() < deadline, "the device never answered a ping after the burst"
    evs = dev.log.events(since)
    confirmed = {str(e.get("id")) for e in evs if e.kind == "change" and e.get("id") in ids}
    errors = sum(1 for e in evs if e.kind == "error")
    return confirmed, errors


def test_the_device_announces_its_console_window(device: Device) -> None:
    assert device.info.get("rx_window") == device.link.credit.window
    assert isinstance(device.link.credit.window, int) and 0 < device.link.credit.window <= 260


def test_without_the_window_commands_are_lost(esp32_console: str, device_factory: DeviceFactory) -> None:
    dev = device_factory(board=esp32_console)
    dev.link.credit.enabled = False
    confirmed, errors = _burst(dev, "nw")
    assert len(confirmed) < N or errors, "a burst ten times the console buffer arrived whole: the emulation is off"


def test_within_the_window_nothing_is_lost(esp32_console: str, device_factory: DeviceFactory) -> None:
    dev = device_factory(board=esp32_console)
    assert dev.link.credit.window
    confirmed, errors = _burst(dev, "w")
    assert len(confirmed) == N and errors == 0, f"{N - len(confirmed)} of {N} lost, {errors} errors"


def test_replies_are_told_from_the_device_s_own_lines() -> None:
    assert is_reply({"ev": "change", "src": "serial"})
    assert is_reply({"ev": "change", "src": "mqtt", "dup": True})  # a repeated id sent over serial
    assert not is_reply({"ev": "change", "src": "mqtt"})
    assert not is_reply({"ev": "change", "src": "button"})
    assert is_reply({"ev": "error", "code": "bad_json"})
    assert not is_reply({"ev": "error", "code": "task_failed", "src": "task"})
    assert not is_reply({"ev": "mqtt", "status": "connected"})


def test_lines_are_cut_where_the_device_cuts_them() -> None:
    assert split_lines(b'{"a":1}\r\n{"b":2}\n{"c"') == [b'{"a":1}\r', b"\n", b'{"b":2}\n', b'{"c"']


def test_the_sender_waits_for_credit_and_names_what_it_waited_for() -> None:
    w = CreditWindow(timeout=0.2)
    w.on_event({"ev": "boot", "rx_window": 100})
    sent: list[bytes] = []
    w.send(b"x" * 60 + b"\n", sent.append)
    with pytest.raises(TimeoutError, match="100-byte console window"):
        w.send(b"y" * 60 + b"\n", sent.append)
    assert len(sent) == 1
    w.send(b"z" * 60 + b"\n", sent.append)  # the timeout reset the count
    w.on_event({"ev": "pong", "id": "x"})
    w.send(b"q" * 30 + b"\n", sent.append)  # fits after the reply
    assert len(sent) == 3


def test_a_line_whose_end_was_lost_is_completed_with_a_lone_line_end() -> None:
    w = CreditWindow(timeout=5)
    w.on_event({"ev": "boot", "rx_window": 100})
    sent: list[bytes] = []

    def device(data: bytes) -> None:  # drops the long line's end; answers the next line end
        sent.append(data)
        if data == b"\n":
            w.on_event({"ev": "error", "code": "too_long"})

    w.send(b"x" * 300 + b"\n", device)
    w.send(b'{"op":"ping"}\n', device)
    assert sent[1:] == [b"\n", b'{"op":"ping"}\n'] and w.nudges == 1, sent[1:]
    w.send(b"y" * 60 + b"\n", device)  # a short line fits the buffer whole: never nudged
    w.timeout = 0.6
    with pytest.raises(TimeoutError, match="2 lines unanswered"):
        w.send(b"z" * 60 + b"\n", device)
    assert w.nudges == 1


def test_a_device_that_stops_reading_in_a_long_line_loses_nothing_after_it(
    esp32_console: str, device_factory: DeviceFactory
) -> None:
    """A line longer than the window goes alone, but the device may stop
    reading while it arrives (here it is stopped, as a busy or descheduled
    device is): the buffer overflows and the line's end is lost. The host
    completes the line, gets its one error, and what it sends next arrives whole."""
    dev = device_factory(board=esp32_console)
    assert dev.unix is not None and dev.unix.proc is not None
    pid = dev.unix.proc.pid
    since = dev.log.cursor
    # Longer than the window and the buffer (388 B), short enough to be on
    # the wire whole (the emulation takes 512 B at a time from the pty).
    long = b'{"op":"set","state":"ON","pad":"' + b"x" * 465 + b'"}\n'
    assert 388 < len(long) <= 512
    os.kill(pid, signal.SIGSTOP)
    try:
        dev.link.write_raw(long)
        time.sleep(0.2)  # the device stopped for longer than the line takes on the wire (44 ms)
    finally:
        os.kill(pid, signal.SIGCONT)
    dev.link.write_raw(b'{"op":"set","id":"after-1","brightness":7}\n')
    dev.log.wait_for(lambda e: e.kind == "change" and e.get("id") == "after-1", 10, "the change of after-1", since)
    info = dev.fetch_info()
    assert info.get("rx_dropped"), f"nothing was dropped: the test did not lose the line end ({info})"
    errs = [e.data for e in dev.log.events(since) if e.kind == "error"]
    assert len(errs) == 1, errs
    assert dev.link.credit.nudges >= 1
