"""What a real ESP32 would hit first, each shown on the Unix port: the board
layer emulates the ESP32 fact (board options in the board JSON), the test
shows the firmware copes with it."""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from host_harness.core.events import Event
from host_harness.dut import boards
from host_harness.dut.device import Device
from host_harness.dut.unix_device import find_micropython
from host_harness.link.mqtt_client import HostMqtt
from host_harness.paths import FIRMWARE_DIR
from host_harness.pytest_plugin import DeviceFactory

pytestmark = pytest.mark.unix_only  # every fact here is emulated by the Unix-port board layer

TLS_HEAP = "160k"  # the Unix port's TLS takes its buffers from the MicroPython heap (see test_security.py)


def _board(tmp_path: Path, name: str, **opts: Any) -> str:
    b = boards.load("unix")
    b.update(opts)
    f = tmp_path / f"{name}.json"
    f.write_text(json.dumps(b))
    return str(f)


def _errors(dev: Device, since: int, code: str) -> list[Event]:
    return [e for e in dev.log.events(since) if e.kind == "error" and e.get("code") == code]


# -- a truncated command is never applied ---------------------------------------
@pytest.mark.parametrize(
    "line",
    [
        b'{"op":"set","id":"cut1","state":"ON"',  # cut before its closing brace (accepted by json on 1.24/1.25)
        b'{"op":"set","id":"cut2","state":"ON"}\x00',  # a NUL after it (accepted by json on 1.29)
        b'{"op":"set","id":"cut3","state":"ON"} x',
    ],
)
def test_a_serial_line_not_ending_in_a_brace_is_refused(device: Device, line: bytes) -> None:
    before = device.get().get("seq")
    since = device.log.cursor
    device.link.write_raw(line + b"\n")
    ev = device.log.wait_for(lambda e: e.kind in ("error", "change"), 5, "the answer to a truncated line", since)
    assert (ev.kind, ev.get("code")) == ("error", "bad_json"), ev.data
    assert device.get().get("seq") == before


def test_an_mqtt_payload_not_ending_in_a_brace_is_refused(device: Device, mqtt: HostMqtt) -> None:
    device.wait_mqtt()
    before = device.get().get("seq")
    since = device.log.cursor
    mqtt.publish(f"{device.base}/set", b'{"state":"ON","id":"cutm"}\x00', qos=1)
    ev = device.log.wait_for(
        lambda e: e.get("src") == "mqtt" and e.kind in ("error", "change"),
        10,
        "the answer to a truncated payload",
        since,
    )
    assert (ev.kind, ev.get("code")) == ("error", "bad_json"), ev.data
    assert device.get().get("seq") == before


# -- the board layer is chosen by name ------------------------------------------
def test_the_board_layer_is_chosen_by_platform_name_not_by_elimination(tmp_path: Path) -> None:
    code = (
        f"import sys; sys.path.insert(0, {str(FIRMWARE_DIR)!r})\n"
        "import board\n"
        "print(board.layer_for('esp32'), board.layer_for('linux'))\n"
        "try:\n    board.layer_for('rp2')\nexcept ImportError as e:\n    print('refused:', e)\n"
    )
    out = subprocess.run(
        [find_micropython(), "-c", code], capture_output=True, text=True, timeout=30, cwd=tmp_path
    ).stdout
    assert "board_esp32 board_unix" in out, out
    assert "refused:" in out and "rp2" in out, out


# -- IRQs are detached when the firmware stops ----------------------------------
def test_ctrl_c_detaches_every_irq(tmp_path: Path, device_factory: DeviceFactory) -> None:
    dev = device_factory(board=_board(tmp_path, "sense", sense={"pin": "SENSE"}))
    dev.set("ON")
    dev.interrupt()
    got = bytearray()
    dev.link.raw_listeners.append(got.extend)
    dev.link.write_raw(b"import board_unix; print('attached:', board_unix.attached())\r")
    deadline = time.monotonic() + 5
    while b"attached: [" not in got or not got.rstrip().endswith(b">>>"):
        assert time.monotonic() < deadline, f"no answer from the REPL about attached IRQs: {bytes(got)!r}"
        time.sleep(0.02)
    assert b"attached: []" in got, bytes(got)


# -- a failing task is restarted, the others go on ------------------------------
def test_a_wifi_error_restarts_the_network_task_and_the_serial_link_goes_on(
    tmp_path: Path, device_factory: DeviceFactory
) -> None:
    """A second sta.connect() can raise OSError("Wifi Internal Error"): the
    board emulates it once; the task is reported, restarted, and connects."""
    dev = device_factory(board=_board(tmp_path, "wifi-fault", faults={"wifi_errors": 1}))
    failed = dev.log.wait_for(
        lambda e: e.kind == "error" and e.get("code") == "task_failed", 10, "the network task's failure report"
    )
    assert failed.get("task") == "mqtt" and "Wifi Internal Error" in str(failed.get("msg")), failed.data
    assert failed.get("src") == "task"
    assert dev.ping()[1].kind == "pong"  # the serial link answers meanwhile
    dev.wait_mqtt(timeout=20)  # the task came back
    assert dev.set("ON").get("state") == "ON"


# -- the sense input waits for its (slow) edge ----------------------------------
def test_a_slow_sense_edge_is_waited_for(tmp_path: Path, device_factory: DeviceFactory) -> None:
    delay_us = 20_000
    dev = device_factory(
        board=_board(tmp_path, "slow-sense", sense={"pin": "SENSE", "delay_us": delay_us, "timeout_ms": 200})
    )
    for state in ("ON", "OFF"):
        ev = dev.set(state)
        assert isinstance(ev.get("t_sense"), int), ev.data
        # The emulated edge comes delay_us after the pin write, which is a few µs before t_pin is stamped.
        assert ev.get("t_sense") - ev.get("t_pin") >= delay_us - 1_000, ev.data


def test_a_sense_edge_later_than_the_timeout_is_reported_missed(tmp_path: Path, device_factory: DeviceFactory) -> None:
    dev = device_factory(
        board=_board(tmp_path, "late-sense", sense={"pin": "SENSE", "delay_us": 300_000, "timeout_ms": 30})
    )
    ev = dev.set("ON")
    assert ev.get("sense") == "missed" and "t_sense" not in ev.data, ev.data


# -- the time is set before TLS -------------------------------------------------
class SntpServer:
    """A real SNTP server on 127.0.0.1: answers with the host's time, or
    stays silent; records when each request arrived."""

    def __init__(self, answer: bool) -> None:
        self.answer = answer
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.requests: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(512)
            except TimeoutError:
                continue
            except OSError:
                return
            self.requests.append(time.monotonic())
            if self.answer and len(data) >= 48 and data[0] & 7 == 3:
                now = int(time.time()) + 2208988800
                reply = bytearray(48)
                reply[0] = 0x24  # version 4, mode 4 (server)
                reply[1] = 2  # stratum
                struct.pack_into("!II", reply, 32, now, 0)  # receive time
                struct.pack_into("!II", reply, 40, now, 0)  # transmit time
                reply[24:32] = data[40:48]  # originate = the client's transmit
                self.sock.sendto(bytes(reply), addr)

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        self._thread.join(timeout=2)


class TcpListener:
    """Stands in for the TLS broker: records when the device connects."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepts: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepts.append(time.monotonic())
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        self._thread.join(timeout=2)


@pytest.fixture
def ca_file(tmp_path: Path) -> Path:
    x509 = pytest.importorskip("cryptography.x509")
    from datetime import UTC, datetime, timedelta

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lightctl test CA")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    f = tmp_path / "ca.pem"
    f.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return f


@pytest.fixture
def tls_target() -> Iterator[TcpListener]:
    t = TcpListener()
    yield t
    t.close()


def _tls_device(
    tmp_path: Path, device_factory: DeviceFactory, ca: Path, target: TcpListener, ntp: SntpServer
) -> Device:
    return device_factory(
        board=_board(tmp_path, "rtc-2000", rtc={"year": 2000}),
        heapsize=TLS_HEAP,
        broker=None,
        config={
            "mqtt": {"host": "127.0.0.1", "port": target.port, "tls": True, "ca": str(ca), "keepalive": 30},
            "ntp": {"host": "127.0.0.1", "port": ntp.port, "timeout_ms": 300},
        },
    )


def test_the_time_is_asked_for_before_the_first_tls_connect(
    tmp_path: Path, device_factory: DeviceFactory, ca_file: Path, tls_target: TcpListener
) -> None:
    ntp = SntpServer(answer=True)
    try:
        dev = _tls_device(tmp_path, device_factory, ca_file, tls_target, ntp)
        dev.log.wait_for(lambda e: e.kind == "time" and e.get("status") == "set", 10, "the device to set its time")
        deadline = time.monotonic() + 10
        while not tls_target.accepts:
            assert time.monotonic() < deadline, "the device never opened its TLS connection after setting the time"
            time.sleep(0.05)
        assert ntp.requests and ntp.requests[0] < tls_target.accepts[0]
    finally:
        ntp.close()


def test_a_silent_time_server_is_reported_and_no_tls_connect_is_tried(
    tmp_path: Path, device_factory: DeviceFactory, ca_file: Path, tls_target: TcpListener
) -> None:
    ntp = SntpServer(answer=False)
    try:
        dev = _tls_device(tmp_path, device_factory, ca_file, tls_target, ntp)
        errs = [
            dev.log.wait_for(
                lambda e, n=n: e.get("code") == "time_unset" and len(_errors(dev, 0, "time_unset")) > n,
                15,
                f"time_unset report number {n + 1}",
            )
            for n in range(2)
        ]
        assert "no answer" in str(errs[0].get("msg")), errs[0].data
        assert len(ntp.requests) >= 2  # retried
        assert not tls_target.accepts, "a TLS connect was tried with the RTC at 2000"
        assert dev.ping()[1].kind == "pong"
    finally:
        ntp.close()
