"""deploy, monitor and flash from the command line, against Unix-port "boards" on real ptys.

A VirtualBoard is a freshly flashed board: ``micropython -i`` at its REPL in an
empty directory (its filesystem), restarted when its process ends (a reset).
"""

from __future__ import annotations

import json
import os
import pty
import queue
import re
import secrets
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import tty
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_runner import ENV, run_cli

from host_harness.broker.running import RunningBroker
from host_harness.dut import boards
from host_harness.dut.device import Device, unix_config
from host_harness.dut.unix_device import UnixDevice
from host_harness.dut.virtual_board import VirtualBoard
from host_harness.image import deploy, firmware_build
from host_harness.link.serial_link import SerialLink
from host_harness.measure.journeys import Journeys
from host_harness.paths import BOARDS_DIR, FIRMWARE_DIR

pytestmark = pytest.mark.needs_process  # spawns virtual boards and Unix-port devices



def harness(*args: str, timeout: float = 90, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, timeout=timeout, env=env)


@pytest.fixture
def vboard(tmp_path: Path) -> Iterator[VirtualBoard]:
    d = tmp_path / "board-fs"
    d.mkdir()
    b = VirtualBoard(d)
    b.start()
    try:
        yield b
    finally:
        b.cleanup()


# -- deploy ------------------------------------------------------------------
def checkout(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A copy of firmware/ and boards/ to deploy from (edits elsewhere do not race the test)."""
    root = tmp_path / "checkout"
    shutil.copytree(FIRMWARE_DIR, root / "firmware")
    shutil.copytree(BOARDS_DIR, root / "boards")
    return root, dict(ENV, LIGHTCTL_ROOT=str(root))


def test_deploy_copies_only_what_changed_resets_and_the_board_boots(
    vboard: VirtualBoard, tmp_path: Path, broker: RunningBroker
) -> None:
    fs, port = vboard.workdir, vboard.port
    root, env = checkout(tmp_path)
    secret = f"wifi-{secrets.token_hex(8)}"
    b = broker.info
    cfg = {
        "device_id": f"deployed-{secrets.token_hex(2)}",
        "wifi": {"ssid": "lab", "password": secret},  # ignored on the Unix port; must never be printed
        "mqtt": {"host": b.host, "port": b.port, "user": b.username, "password": b.password, "keepalive": 30},
    }
    cfg_file = tmp_path / "device.json"
    cfg_file.write_text(json.dumps(cfg))
    secrets_in_cfg = [s for s in (secret, b.password) if s]
    args = ("deploy", "--port", port, "--board", "unix", "--config", str(cfg_file))

    r = harness(*args, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    for s in secrets_in_cfg:
        assert s not in r.stdout + r.stderr
    assert f"booted: device {cfg['device_id']}" in r.stdout, r.stdout
    vboard.wait_boots(2)  # reset: the board started again, now running main.py
    # the files landed: main.py as source, the rest as the board's .mpy (or .py if mpy-cross differs)
    assert (fs / "main.py").read_bytes() == (root / "firmware" / "main.py").read_bytes()
    mpy = "precompiled .mpy" in r.stdout
    want = {f.name: f.data for f in deploy.firmware_files(mpy, root / "firmware")}
    assert ("app.mpy" in want) == mpy
    for name, data in want.items():
        assert (fs / name).read_bytes() == data, name
    assert json.loads((fs / "board.json").read_text()) == boards.load(str(root / "boards" / "unix.json"))
    on_device = json.loads((fs / "config.json").read_text())
    assert on_device["board"] == "board.json"
    assert on_device["device_id"] == cfg["device_id"]
    assert on_device["wifi"]["password"] == secret
    assert f"{len(want) + 3} changed, 0 unchanged" in r.stdout  # and board.json, config.json, the build id
    fw = firmware_build.firmware_hash(root / "firmware")
    assert (fs / firmware_build.FW_ID_FILE).read_text().strip() == fw
    assert f"({fw})" in r.stdout, r.stdout  # the booted firmware reports it

    # nothing changed: nothing copied
    r = harness(*args, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 changed" in r.stdout and "  copy " not in r.stdout, r.stdout

    # a source edited on the host, a file damaged on the device: exactly those two are copied, and the new build id
    with (root / "firmware" / "light.py").open("a") as f:
        f.write("\nDEPLOY_TEST_EDIT = 1\n")
    damaged = "clock.mpy" if mpy else "clock.py"
    (fs / damaged).write_bytes(b"# not the firmware\n")
    r = harness(*args, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    edited = "light.mpy" if mpy else "light.py"
    assert f"3 changed, {len(want)} unchanged" in r.stdout, r.stdout
    assert sorted(re.findall(r"copy +(\S+)", r.stdout)) == sorted([edited, damaged, firmware_build.FW_ID_FILE])
    assert f"({firmware_build.firmware_hash(root / 'firmware')})" in r.stdout, r.stdout
    want = {f.name: f.data for f in deploy.firmware_files(mpy, root / "firmware")}
    assert (fs / edited).read_bytes() == want[edited]
    assert (fs / damaged).read_bytes() == want[damaged]

    # sources instead of .mpy: the .mpy files go, so they cannot shadow stale code
    if mpy:
        r = harness(*args, "--no-mpy", env=env)
        assert r.returncode == 0, r.stdout + r.stderr
        assert (fs / "app.py").exists() and not (fs / "app.mpy").exists()
        assert not list(fs.glob("*.mpy"))

    # the deployed board works: info, a serial journey, its MQTT link up
    dev = Device(SerialLink(port, name="deployed"), boards.load("unix"))
    try:
        info = dev.wait_boot(10)
        assert (info["device_id"], info["board"]) == (cfg["device_id"], "unix")
        j = Journeys(dev).via_serial("ON", 33)
        assert (j.state, j.brightness) == ("ON", 33)
        dev.wait_mqtt(20)
    finally:
        dev.close()


def test_deploy_to_a_port_that_does_not_exist_says_so() -> None:
    r = harness("deploy", "--port", "/dev/ttyUSB-lightctl-none", "--board", "esp32-devkitc", timeout=30)
    assert r.returncode == 2
    assert "serial port /dev/ttyUSB-lightctl-none does not exist" in r.stderr


def test_deploy_to_a_busy_port_names_the_program_holding_it(vboard: VirtualBoard) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import serial,time;s=serial.Serial({vboard.port!r});print('open',flush=True);time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        r = harness("deploy", "--port", vboard.port, "--board", "unix", timeout=30)
        assert r.returncode == 2
        assert f"serial port {vboard.port} is busy" in r.stderr and f"pid {holder.pid}" in r.stderr, r.stderr
    finally:
        holder.kill()
        holder.wait(timeout=10)
    assert not list(vboard.workdir.iterdir()), "nothing may be copied to a busy port"


def test_deploy_to_a_device_without_micropython_fails_quickly() -> None:
    master, slave = pty.openpty()  # a serial line where nothing answers
    tty.setraw(slave)
    try:
        t0 = time.monotonic()
        r = harness("deploy", "--port", os.ttyname(slave), "--board", "unix", "--repl-timeout", "1.5", timeout=30)
        assert r.returncode == 2
        assert "no MicroPython REPL" in r.stderr and "'>>>' prompt" in r.stderr, r.stderr
        assert time.monotonic() - t0 < 20
    finally:
        os.close(master)
        os.close(slave)


def test_deploy_to_a_full_filesystem_says_which_file_failed(vboard: VirtualBoard) -> None:
    # Writing to /dev/full fails with ENOSPC, as a full flash filesystem does.
    (vboard.workdir / "light.py").symlink_to("/dev/full")
    r = harness("deploy", "--port", vboard.port, "--board", "unix", "--no-mpy", timeout=60)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "filesystem is full: copying light.py failed" in r.stderr, r.stderr
    assert vboard.boots == 1, "no reset after a failed copy"


# -- monitor -----------------------------------------------------------------
class Lines:
    """A process's stdout lines, read in a thread, awaited with a timeout."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.q: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self.proc = proc
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.q.put(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"no line matching {pattern!r} within {timeout:g} s; got:\n" + "\n".join(self.seen)
                )
            try:
                line = self.q.get(timeout=left)
            except queue.Empty:
                continue
            self.seen.append(line)
            if re.search(pattern, line):
                return line


@pytest.fixture
def unix_port() -> Iterator[str]:
    """A Unix-port device on a pty, its ticks wrapping every 2**20 µs."""
    b = boards.load("unix")
    b["ticks"] = {"period": 2**20, "start": 2**20 - 200_000}
    u = UnixDevice(unix_config(b, None))
    try:
        port = u.start()
        # Booted before the monitor opens the port: its boot line is not one of the events counted.
        probe = Device(SerialLink(port, name="probe"), b)
        try:
            probe.wait_boot()
        finally:
            probe.link.close()
        yield port
    finally:
        u.cleanup()


def monitor(port: str, *args: str) -> tuple[subprocess.Popen[str], Lines]:
    p = subprocess.Popen(
        [sys.executable, "-m", "host_harness", "monitor", "--port", port, "--color", "never", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        env=ENV,
    )
    return p, Lines(p)


def write_line(port: str, data: bytes) -> None:
    """Write to the device without reading: the monitor is the only reader."""
    fd = os.open(port, os.O_WRONLY | os.O_NOCTTY)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


DURATION = r"\d+(\.\d+)? (µs|ms)"


def test_monitor_prints_a_change_event_with_decoded_durations(unix_port: str) -> None:
    p, out = monitor(unix_port, "--count", "1", "--seconds", "30")
    try:
        head = out.wait_for(r"^monitor ")
        assert "ticks period 2**20" in head and "firmware 0.1" in head, head
        write_line(unix_port, b'{"op":"set","id":"mon-set","state":"ON","brightness":42}\n')
        line = out.wait_for(r"\bchange\b")
        assert p.wait(timeout=20) == 0, p.stderr.read() if p.stderr else ""
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=10)
    assert re.match(r"^\d\d:\d\d:\d\d\.\d{3}  change ", line), line
    assert re.search(rf"#1  ON 42  src=serial  id=mon-set  rx→pin {DURATION}  rx→tx {DURATION}$", line), line


def test_monitor_prefixes_console_noise_and_stops_on_ctrl_c(unix_port: str) -> None:
    p, out = monitor(unix_port)
    try:
        out.wait_for(r"^monitor ")
        write_line(unix_port, b"\x03")  # Ctrl-C to the device: the firmware stops with a traceback
        assert "  | " in out.wait_for(r"KeyboardInterrupt")
        p.send_signal(signal.SIGINT)
        assert p.wait(timeout=20) == 0
        out.wait_for(r"^monitor: stopped after 0 events")
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=10)


def test_monitor_shows_a_repeated_command_as_a_repeat_and_a_press_with_its_id(unix_port: str) -> None:
    p, out = monitor(unix_port, "--seconds", "30")
    try:
        out.wait_for(r"^monitor ")
        cmd = b'{"op":"set","id":"mon-rep","state":"ON","brightness":7}\n'
        write_line(unix_port, cmd)
        first = out.wait_for(r"\bchange\b.*mon-rep")
        write_line(unix_port, cmd)  # the same id again: the device answers, does not apply it
        again = out.wait_for(r"\bchange\b.*mon-rep")
        write_line(unix_port, b'{"op":"press","id":"mon-press"}\n')
        press = out.wait_for(r"\back\b")
        toggle = out.wait_for(r"\bchange\b.*src=button")
    finally:
        p.kill()
        p.wait(timeout=10)
    seq = re.search(r"#(\d+)", first)
    assert seq, first
    assert re.search(rf"change  repeat of mon-rep \(seq {seq.group(1)}, not applied again\)", again), again
    assert "rx→" not in again, again  # the original's times, not a new duration
    assert re.search(r"ack     press queued  id=mon-press$", press), press
    assert re.search(r"id=button-", toggle), toggle


# -- flash (no ESP32 here: argument handling and failures) ------------------
def esp_image(path: Path, chip_id: int) -> Path:
    """The first bytes of an ESP-IDF image (extended header) for chip ``chip_id``."""
    head = bytes([0xE9, 3, 2, 0x20, 0, 0, 0x08, 0x40, 0xEE, 0, 0, 0]) + chip_id.to_bytes(2, "little")
    head += bytes([0, 0, 0, 0xFF, 0xFF, 0, 0, 0, 0, 1])
    path.write_bytes(head + bytes(4096))
    return path


def test_flash_finds_the_offset_from_the_image_and_checks_the_chip(tmp_path: Path) -> None:
    from host_harness.image import flash

    esp32 = flash.inspect_image(esp_image(tmp_path / "esp32.bin", 0))
    s3 = flash.inspect_image(esp_image(tmp_path / "s3.bin", 9))
    assert (esp32.chip, flash.flash_offset(esp32)) == ("esp32", 0x1000)
    assert (s3.chip, flash.flash_offset(s3)) == ("esp32s3", 0)
    assert flash.flash_offset(s3, addr="0x10000") == 0x10000
    with pytest.raises(flash.FlashError, match="built for ESP32-S3, not ESP32"):
        flash.flash_offset(s3, chip="esp32")
    cmd = flash.esptool_command("/dev/ttyUSB0", esp32, 0x1000, erase=True, baud=921600)
    assert cmd[1:3] == ["-m", "esptool"] and "--erase-all" in cmd and cmd[-2:] == ["0x1000", str(esp32.path)]

    r = harness("flash", "--port", "/dev/ttyUSB0", "--firmware", str(tmp_path / "missing.bin"), timeout=30)
    assert r.returncode == 2 and "firmware image" in r.stderr and "does not exist" in r.stderr
    (tmp_path / "notes.txt").write_text("hello")
    r = harness("flash", "--port", "/dev/ttyUSB0", "--firmware", str(tmp_path / "notes.txt"), timeout=30)
    assert r.returncode == 2 and "not an ESP firmware image" in r.stderr
    r = harness("flash", "--port", "/dev/ttyUSB-lightctl-none", "--firmware", str(esp32.path), timeout=30)
    assert r.returncode == 2 and "serial port /dev/ttyUSB-lightctl-none does not exist" in r.stderr


def test_flash_to_a_port_nobody_serves_fails_quickly_through_esptool(tmp_path: Path) -> None:
    img = esp_image(tmp_path / "esp32.bin", 0)
    # a remote serial port (RFC 2217) on a TCP port where nothing listens
    t0 = time.monotonic()
    r = harness("flash", "--port", "rfc2217://127.0.0.1:9", "--firmware", str(img), timeout=60)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "esptool" in r.stdout  # esptool ran, its output passed through
    assert "cannot open serial port rfc2217://127.0.0.1:9" in r.stderr, r.stderr
    assert time.monotonic() - t0 < 30


def test_flash_to_a_port_without_an_esp_bootloader_says_so(vboard: VirtualBoard, tmp_path: Path) -> None:
    img = esp_image(tmp_path / "esp32.bin", 0)
    r = harness(
        "flash",
        "--port",
        vboard.port,
        "--firmware",
        str(img),
        "--connect-attempts",
        "1",
        "--baud",
        "115200",
        timeout=60,
    )
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"no ESP bootloader answered on {vboard.port}" in r.stderr, r.stderr


# -- several boards ----------------------------------------------------------
INNER_TEST = """
import os
from pathlib import Path

def test_a(lightctl, device):
    Path(os.environ["LIGHTCTL_OUT"], os.environ.get("PYTEST_XDIST_WORKER", "main") + "-" + device.device_id).touch()
    assert lightctl.device in lightctl.devices and len(lightctl.devices) == 2
    device.set("ON", 7)

test_b = test_c = test_d = test_a
"""


def test_xdist_workers_each_take_one_of_several_devices(tmp_path: Path, broker: RunningBroker) -> None:
    pytest.importorskip("xdist")
    devs = [UnixDevice(unix_config(boards.load("unix"), None, device_id=f"multi-{k}")) for k in range(2)]
    try:
        ports = [d.start() for d in devs]
        (tmp_path / "test_inner.py").write_text(textwrap.dedent(INNER_TEST))
        out = tmp_path / "seen"
        out.mkdir()
        args = ["-n", "2", "-p", "no:cacheprovider", "--lightctl-board", "unix", "--lightctl-broker", broker.info.url]
        for port in ports:
            args += ["--lightctl-device", port]
        r = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", *args, str(tmp_path / "test_inner.py")],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
            env=dict(ENV, LIGHTCTL_OUT=str(out)),
        )
        assert r.returncode == 0, r.stdout + r.stderr
        seen = {p.name for p in out.iterdir()}
        # worker gwK drives device K: its own board, on its own port
        assert seen == {"gw0-multi-0", "gw1-multi-1"}, seen
    finally:
        for d in devs:
            d.cleanup()
