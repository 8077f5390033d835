"""The suite against a board: what a board refuses, which tests it skips and why, its
firmware's build id, each test's device log, and a port that disappears and comes back.

The boards here are virtual: a Unix-port interpreter on a pty with the firmware in its
filesystem, reached only through its port, as a flashed board is.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from host_harness.broker.running import RunningBroker
from host_harness.core.events import WaitTimeout
from host_harness.dut import boards, caps
from host_harness.dut.device import Device, open_device
from host_harness.dut.virtual_board import VirtualBoard
from host_harness.image import deploy, firmware_build
from host_harness.link.serial_link import SerialLink


# -- what a board cannot do -----------------------------------------------------
def test_a_board_refuses_the_options_it_cannot_honour(broker: RunningBroker) -> None:
    with pytest.raises(ValueError) as e:
        open_device(
            "socket://127.0.0.1:9",  # never opened: refused first
            "unix",
            broker=broker.info,
            device_id="x",
            keepalive=5,
            config={"mqtt": {"qos": 0}},
        )
    msg = str(e.value)
    for name in ("broker", "device_id", "keepalive", "config"):
        assert name in msg, msg
    assert "heapsize" not in msg and "workdir" not in msg, msg


def test_markers_are_matched_against_what_the_device_has() -> None:
    sim = caps.for_board("/dev/ttyV0", boards.load("unix"), {"simulated": True, "board": "unix"})
    real = caps.for_board("/dev/ttyUSB0", {**boards.load("esp32-devkitc"), "sense": {"pin": 34}}, {"board": "esp32"})
    assert caps.UNIX.missing(["needs_process", "needs_config", "needs_sim_pin", "needs_sense", "unix_only"]) is None
    assert caps.UNIX.missing(["hardware"]) == "needs a real board: the Unix port has not"
    assert sim.missing(["needs_sim_pin", "parametrize"]) is None
    why = sim.missing(["needs_config", "needs_process"])
    assert why is not None and "config" in why and "process control" in why and "/dev/ttyV0" in why
    assert sim.missing(["needs_sense"]) is not None and sim.missing(["hardware"]) is not None
    assert real.missing(["needs_sense", "hardware"]) is None
    assert real.missing(["needs_sim_pin"]) is not None
    assert real.missing(["unix_only"]) == "needs the Unix port the harness spawns: " + real.where + " has not"


# -- virtual boards with the firmware in their filesystem -------------------------
def flash(fs: Path, config: dict[str, object], fw_id: str | None = None) -> None:
    """The firmware, board and config on a board's filesystem, as deploy leaves them."""
    files = [*deploy.firmware_files(False), deploy.board_file(boards.load("unix")), deploy.config_file(config)]
    files.append(deploy.fw_id_file())
    for f in files:
        (fs / f.name).write_bytes(f.data)
    if fw_id is not None:
        (fs / firmware_build.FW_ID_FILE).write_text(fw_id + "\n")


@pytest.fixture
def board_fs(tmp_path: Path) -> Path:
    fs = tmp_path / "board-fs"
    fs.mkdir()
    return fs


@pytest.fixture
def linked_board(tmp_path: Path, board_fs: Path) -> Iterator[VirtualBoard]:
    """A flashed board without MQTT whose port is a name (a symlink), as udev gives it."""
    flash(board_fs, {"device_id": "linked", "base_topic": "lightctl"})
    b = VirtualBoard(board_fs, link=tmp_path / "ttyV0")
    b.start()
    try:
        yield b
    finally:
        b.cleanup()


class Said:
    """What the serial link says about its port, as it says it."""

    def __init__(self, link: SerialLink) -> None:
        self.lines: list[str] = []
        self._cv = threading.Condition()
        link.line_listeners.append(self._line)

    def _line(self, _ns: int, noise: str, _data: object) -> None:
        if noise.startswith("[lightctl]"):
            with self._cv:
                self.lines.append(noise)
                self._cv.notify_all()

    def wait(self, text: str, timeout: float = 10.0) -> str:
        with self._cv:
            if not self._cv.wait_for(lambda: any(text in s for s in self.lines), timeout):
                raise WaitTimeout(f"the serial link to say {text!r} within {timeout:g} s; it said {self.lines}")
            return next(s for s in self.lines if text in s)


@pytest.mark.needs_process  # makes boards of its own
def test_a_port_that_disappears_and_comes_back_is_reopened(linked_board: VirtualBoard) -> None:
    port = linked_board.port
    dev = open_device(port, "unix")
    try:
        said = Said(dev.link)
        assert dev.set("ON").get("state") == "ON"
        boots = linked_board.boots
        linked_board.unplug()  # a USB-JTAG board's reset: the port goes away
        assert not Path(port).exists()
        assert port in said.wait("disappeared")
        linked_board.replug()  # and comes back under the same name, on another pty
        assert said.wait("reopened") == f"[lightctl] reopened {port}"
        assert linked_board.boots == boots + 1 and dev.link.reopens == 1
        info = dev.wait_boot()  # the same Device and link: the new boot answers
        assert info["device_id"] == "linked"
        assert dev.get().get("state") == "OFF"  # it booted afresh
        assert dev.set("ON").get("state") == "ON"
    finally:
        dev.close()


@pytest.mark.needs_process
def test_commands_sent_while_the_port_is_away_go_out_once_it_is_back(linked_board: VirtualBoard) -> None:
    dev = open_device(linked_board.port, "unix")
    try:
        said = Said(dev.link)
        linked_board.unplug()
        said.wait("disappeared")
        # The board re-enumerates a moment later (from another thread, as udev would);
        # meanwhile the harness asks for info, as it does right after a reset.
        back = threading.Timer(0.5, linked_board.replug)
        back.start()
        try:
            info = dev.wait_boot()  # its writes wait for the port, then go out: no ConnectionError
        finally:
            back.join()
        assert info["device_id"] == "linked" and dev.link.reopens == 1
        assert dev.set("ON").get("state") == "ON"
    finally:
        dev.close()


@pytest.mark.needs_process
def test_a_port_that_does_not_come_back_ends_waits_naming_it(linked_board: VirtualBoard) -> None:
    dev = Device(SerialLink(linked_board.port, reopen_timeout=0.5), boards.load("unix"))
    try:
        dev.wait_boot()
        linked_board.unplug()
        with pytest.raises(WaitTimeout, match=r"disappeared and did not come back within 0\.5 s"):
            dev.log.wait_for(lambda e: False, 10, "nothing")
    finally:
        dev.close()


# -- the plugin against a board: build id, --lightctl-deploy, device logs ----------
TINY_TEST = """
def test_on(device):
    assert device.set("ON").get("state") == "ON"
"""


def run_pytest(tmp_path: Path, port: str, broker: RunningBroker, *extra: str) -> subprocess.CompletedProcess[str]:
    test = tmp_path / "test_tiny.py"
    test.write_text(TINY_TEST)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-n",
            "0",
            "-p",
            "no:cacheprovider",
            "--lightctl-device",
            port,
            "--lightctl-board",
            "unix",
            "--lightctl-broker",
            broker.info.url,
            *extra,
            str(test),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.needs_process
def test_a_board_with_other_firmware_is_refused_or_deployed_to(
    tmp_path: Path, board_fs: Path, broker: RunningBroker
) -> None:
    flash(board_fs, {"device_id": "stale", "base_topic": "lightctl"}, fw_id="0123456789abcdef")
    board = VirtualBoard(board_fs)
    port = board.start()
    want = firmware_build.firmware_hash()
    try:
        r = run_pytest(tmp_path, port, broker)
        assert r.returncode == 4, r.stdout + r.stderr  # a usage error, before any test
        out = r.stdout + r.stderr
        assert f"runs firmware 0123456789abcdef, this checkout's is {want}" in out, out
        assert "--lightctl-deploy" in out, out

        xml, logs = tmp_path / "junit.xml", tmp_path / "logs"
        r = run_pytest(tmp_path, port, broker, "--lightctl-deploy", f"--junitxml={xml}", f"--lightctl-log-dir={logs}")
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"this checkout's is {want}: deploying it" in r.stdout, r.stdout
        assert "keeping the device's config.json" in r.stdout, r.stdout
        assert (board_fs / firmware_build.FW_ID_FILE).read_text().strip() == want
        assert json.loads((board_fs / "config.json").read_text())["device_id"] == "stale"

        props = [(p.get("name"), p.get("value")) for p in ET.parse(xml).iter("property")]
        paths = [v for k, v in props if k == "device_log"]
        assert len(paths) == 1 and paths[0] is not None and Path(paths[0]).parent == logs, props
        text = Path(paths[0]).read_text()
        assert 'dev1 < {"ev":"info"' in text and f'"fw":"{want}"' in text  # from the first info on
        assert ' dev1 > {"op":"set"' in text and ' dev1 < {"ev":"change"' in text, text
    finally:
        board.cleanup()


@pytest.mark.needs_process
def test_a_freshly_flashed_board_is_deployed_to_first(tmp_path: Path, board_fs: Path, broker: RunningBroker) -> None:
    board = VirtualBoard(board_fs)  # an empty filesystem: MicroPython at its REPL, no firmware
    port = board.start()
    try:
        r = run_pytest(tmp_path, port, broker, "--lightctl-deploy")
        assert r.returncode == 0, r.stdout + r.stderr
        want = firmware_build.firmware_hash()
        assert f"runs no firmware answering info, this checkout's is {want}: deploying it" in r.stdout, r.stdout
        assert (board_fs / firmware_build.FW_ID_FILE).read_text().strip() == want
    finally:
        board.cleanup()
