"""Remote serial: a device's pty exported by ser2net over RFC 2217, driven by its URL.

This is how a board on another machine (a lab host, a labgrid exporter) is
reached: the harness only sees ``rfc2217://host:port``.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from host_harness import children
from host_harness.broker.running import RunningBroker
from host_harness.dut import boards
from host_harness.dut.device import Device, open_device, unix_config
from host_harness.dut.unix_device import UnixDevice
from host_harness.dut.virtual_board import VirtualBoard
from host_harness.link.mqtt_client import HostMqtt
from host_harness.measure.journeys import Journeys

SER2NET = shutil.which("ser2net") or next((p for p in ("/usr/sbin/ser2net",) if Path(p).exists()), None)

pytestmark = [
    pytest.mark.needs_process,  # exports a Unix-port device of its own
    pytest.mark.skipif(SER2NET is None, reason="ser2net is not installed (apt-get install ser2net)"),
]

# A pty has no modem lines: ser2net does not acknowledge DTR/RTS on it, so the
# client must not wait for that (a USB serial adapter behind ser2net does not need it).
URL_OPTIONS = "?ign_set_control"


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Ser2net:
    """ser2net exporting one serial device over RFC 2217 on loopback."""

    def __init__(self, device: str, workdir: Path) -> None:
        self.tcp_port = free_tcp_port()
        conf = workdir / "ser2net.yaml"
        # tcp(nodelay): without it Nagle and delayed ACKs add ~40 ms to each exchange;
        # chardelay false: forward bytes as they come, not after a serial idle time.
        conf.write_text(
            "connection: &con0\n"
            f"  accepter: telnet(rfc2217),tcp(nodelay),127.0.0.1,{self.tcp_port}\n"
            "  options:\n"
            "    chardelay: false\n"
            f"  connector: serialdev,{device},115200n81,local\n"
        )
        self.log = workdir / "ser2net.log"
        with self.log.open("wb") as log:
            self.proc = children.spawn(
                [str(SER2NET), "-n", "-d", "-c", str(conf), "-P", str(workdir / "ser2net.pid")],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self._wait_listening(10.0)

    @property
    def url(self) -> str:
        return f"rfc2217://127.0.0.1:{self.tcp_port}{URL_OPTIONS}"

    def _wait_listening(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ser2net exited ({self.proc.returncode}): {self.log.read_text()[-500:]}")
            try:
                socket.create_connection(("127.0.0.1", self.tcp_port), 0.5).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"ser2net did not listen on 127.0.0.1:{self.tcp_port} within {timeout:g} s"
                    ) from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


@pytest.fixture
def remote(tmp_path: Path, broker: RunningBroker) -> Iterator[Device]:
    """A Unix-port device with MQTT, reached only through ser2net's RFC 2217 URL."""
    unix = UnixDevice(unix_config(boards.load("unix"), broker.info))
    s2n: Ser2net | None = None
    dev: Device | None = None
    try:
        s2n = Ser2net(unix.start(), tmp_path)
        dev = open_device(s2n.url, board="unix")
        yield dev
    finally:
        if dev is not None:
            dev.close()
        if s2n is not None:
            s2n.stop()
        unix.cleanup()


def test_serial_journey_over_rfc2217(remote: Device) -> None:
    assert remote.link.url.startswith("rfc2217://")
    assert remote.info["board"] == "unix"
    j = Journeys(remote).via_serial("ON", 77)
    assert (j.state, j.brightness, j.src) == ("ON", 77, "serial")
    assert 0 <= j.rx_to_pin_ms <= j.rx_to_tx_ms
    st = remote.get()
    assert (st.get("state"), st.get("brightness"), st.get("seq")) == ("ON", 77, j.seq)


def test_mqtt_journey_with_the_device_on_rfc2217(remote: Device, mqtt: HostMqtt) -> None:
    remote.wait_mqtt()
    js = Journeys(remote, mqtt)
    since = remote.log.cursor
    j = js.via_mqtt("ON", 12)
    assert (j.state, j.brightness, j.src) == ("ON", 12, "mqtt")
    # the serial side, over the network, reports the same change
    ev = remote.log.wait_for(
        lambda e: e.kind == "change" and e.get("id") == j.id, 5.0, f"the change {j.id!r} on the remote serial", since
    )
    assert ev.get("seq") == j.seq


def test_deploy_and_monitor_through_rfc2217(tmp_path: Path) -> None:
    fs = tmp_path / "board-fs"
    fs.mkdir()
    board = VirtualBoard(fs)
    s2n: Ser2net | None = None
    try:
        s2n = Ser2net(board.start(), tmp_path)
        r = subprocess.run(
            [sys.executable, "-m", "host_harness", "deploy", "--port", s2n.url, "--board", "unix"],
            capture_output=True,
            text=True,
            timeout=90,
            stdin=subprocess.DEVNULL,
        )
        assert r.returncode == 0, r.stdout + r.stderr
        assert "booted: device light-" in r.stdout, r.stdout
        assert (fs / "main.py").exists() and (fs / "board.json").exists()
        r = subprocess.run(
            [sys.executable, "-m", "host_harness", "monitor", "--port", s2n.url, "--seconds", "1"],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        assert r.returncode == 0, r.stdout + r.stderr
        assert r.stdout.startswith(f"monitor {s2n.url}: device light-"), r.stdout
    finally:
        if s2n is not None:
            s2n.stop()
        board.cleanup()
