"""Security end to end: TLS (server and client certificates), passwords and an
ACL on a real Mosquitto, the device on the Unix port verifying the broker, and
credentials kept out of everything printed.

Each test starts its own Mosquitto with the configuration it needs (so the
session's broker may be anything); certificates are made here with the
``cryptography`` package.
"""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from host_harness.broker.info import BrokerInfo
from host_harness.broker.mosquitto import find_mosquitto
from host_harness.broker.running import RunningBroker
from host_harness.broker.start import start_broker
from host_harness.dut.device import Device
from host_harness.link.mqtt_client import HostMqtt
from host_harness.measure.journeys import Journeys
from host_harness.paths import ROOT
from host_harness.pytest_plugin import DeviceFactory

pytestmark = pytest.mark.needs_config  # the device gets its certificates and broker through its config file

TIMEOUT = 5.0
# On the Unix port mbedTLS takes its ~6 kB per connection (one block of 3 kB)
# from the MicroPython heap, which the default heap cannot spare; on an ESP32 it
# uses the IDF heap, outside the MicroPython one. TLS devices here get more room.
TLS_HEAP = "112k"
MOSQUITTO = find_mosquitto()
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or (
    "/usr/bin/mosquitto_passwd" if os.access("/usr/bin/mosquitto_passwd", os.X_OK) else None
)
needs_mosquitto = pytest.mark.skipif(
    MOSQUITTO is None or MOSQUITTO_PASSWD is None,
    reason="needs mosquitto and mosquitto_passwd (TLS listener, password file, ACL)",
)


# --------------------------------------------------------------------------
# certificates
# --------------------------------------------------------------------------


@dataclass
class Pki:
    ca: Path  # the CA that signed the broker's and the client's certificates
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_ca: Path  # a CA that signed nothing here
    wrong_name_cert: Path  # signed by ``ca``, but for another host name
    wrong_name_key: Path


def _make_pki(d: Path) -> Pki:
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def key() -> Any:
        return ec.generate_private_key(ec.SECP256R1())

    def name(cn: str) -> Any:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write_key(k: Any, path: Path) -> Path:
        path.write_bytes(
            k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        )
        return path

    def write_cert(c: Any, path: Path) -> Path:
        path.write_bytes(c.public_bytes(serialization.Encoding.PEM))
        return path

    def ca(cn: str) -> tuple[Any, Any]:
        k = key()
        c = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(name(cn))
            .public_key(k.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(k, hashes.SHA256())
        )
        return k, c

    def leaf(ca_key: Any, ca_cert: Any, cn: str, sans: list[Any], usage: Any) -> tuple[Any, Any]:
        k = key()
        b = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(ca_cert.subject)
            .public_key(k.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return k, b.sign(ca_key, hashes.SHA256())

    ca_key, ca_cert = ca("lightctl test CA")
    _, rogue = ca("lightctl rogue CA")
    local = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    s_key, s_cert = leaf(ca_key, ca_cert, "localhost", local, ExtendedKeyUsageOID.SERVER_AUTH)
    c_key, c_cert = leaf(ca_key, ca_cert, "lightctl device", [], ExtendedKeyUsageOID.CLIENT_AUTH)
    w_key, w_cert = leaf(
        ca_key, ca_cert, "broker.example", [x509.DNSName("broker.example")], ExtendedKeyUsageOID.SERVER_AUTH
    )
    return Pki(
        ca=write_cert(ca_cert, d / "ca.pem"),
        server_cert=write_cert(s_cert, d / "server.pem"),
        server_key=write_key(s_key, d / "server.key"),
        client_cert=write_cert(c_cert, d / "client.pem"),
        client_key=write_key(c_key, d / "client.key"),
        rogue_ca=write_cert(rogue, d / "rogue-ca.pem"),
        wrong_name_cert=write_cert(w_cert, d / "wrong-name.pem"),
        wrong_name_key=write_key(w_key, d / "wrong-name.key"),
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return _make_pki(tmp_path_factory.mktemp("pki"))


# --------------------------------------------------------------------------
# users, passwords, ACL, brokers
# --------------------------------------------------------------------------


@dataclass
class Users:
    device_id: str
    device: tuple[str, str]  # the light: its own topics only
    controller: tuple[str, str]  # may command any light
    viewer: tuple[str, str]  # may only read
    password_file: Path
    acl_file: Path

    def all_passwords(self) -> list[str]:
        return [self.device[1], self.controller[1], self.viewer[1]]


@pytest.fixture
def users(tmp_path: Path) -> Users:
    device_id = f"sec-{secrets.token_hex(3)}"
    u = Users(
        device_id=device_id,
        device=("light-" + device_id, "dev-" + secrets.token_urlsafe(12)),
        controller=("controller", "ctl-" + secrets.token_urlsafe(12)),
        viewer=("viewer", "view-" + secrets.token_urlsafe(12)),
        password_file=tmp_path / "passwd",
        acl_file=tmp_path / "acl",
    )
    assert MOSQUITTO_PASSWD is not None
    first = True
    for name, password in (u.device, u.controller, u.viewer):
        subprocess.run(
            [MOSQUITTO_PASSWD, "-b", *(["-c"] if first else []), str(u.password_file), name, password],
            check=True,
            capture_output=True,
            timeout=20,
        )
        first = False
    base = f"lightctl/{device_id}"
    u.acl_file.write_text(
        f"user {u.device[0]}\n"
        f"topic readwrite {base}/#\n"
        f"topic write homeassistant/light/{device_id}/config\n"
        f"\nuser {u.controller[0]}\n"
        "topic readwrite lightctl/#\n"
        "topic read homeassistant/#\n"
        f"\nuser {u.viewer[0]}\n"
        "topic read lightctl/#\n"
    )
    return u


def _as(info: BrokerInfo, user: tuple[str, str]) -> BrokerInfo:
    return dataclasses.replace(info, username=user[0], password=user[1])


def _secured_broker(users: Users, pki: Pki | None, require_cert: bool = False) -> RunningBroker:
    extra = [f"password_file {users.password_file}", f"acl_file {users.acl_file}"]
    if pki is not None:
        extra += [f"certfile {pki.server_cert}", f"keyfile {pki.server_key}", f"cafile {pki.ca}"]
        if require_cert:
            extra.append("require_certificate true")
    return start_broker(
        prefer="mosquitto",
        extra_config=extra,
        tls=pki is not None,
        username=users.controller[0],
        password=users.controller[1],
        allow_anonymous=False,
    )


@pytest.fixture
def tls_broker(users: Users, pki: Pki) -> Iterator[RunningBroker]:
    b = _secured_broker(users, pki)
    yield b
    b.stop()


def _device_config(users: Users, **mqtt: Any) -> dict[str, Any]:
    return {"mqtt": {"user": users.device[0], "password": users.device[1], **mqtt}}


def _mqtt_status(dev: Device, since: int, timeout: float = 20.0) -> dict[str, Any]:
    ev = dev.log.wait_for(lambda e: e.kind == "mqtt", timeout, "an MQTT status report", since)
    return dict(ev.data)


# --------------------------------------------------------------------------
# (a) TLS + password, end to end
# --------------------------------------------------------------------------


@needs_mosquitto
def test_journey_over_tls_with_passwords(
    device_factory: DeviceFactory, tls_broker: RunningBroker, users: Users, pki: Pki
) -> None:
    assert tls_broker.info.tls and tls_broker.info.scheme == "mqtts"
    dev = device_factory(
        heapsize=TLS_HEAP,
        broker=tls_broker.info,
        device_id=users.device_id,
        config=_device_config(users, ca=str(pki.ca)),
    )
    dev.wait_mqtt()
    host = HostMqtt(tls_broker.info, "tls", ca_file=str(pki.ca)).connect()
    try:
        js = Journeys(dev, host)
        j = js.via_mqtt("ON", 42)
        assert (j.state, j.brightness, j.src) == ("ON", 42, "mqtt")
        assert js.via_mqtt("OFF").seq == j.seq + 1
    finally:
        host.close()
    assert dev.fetch_info()["mqtt"] == "connected"


@needs_mosquitto
def test_journey_with_client_certificates_required_by_the_broker(
    device_factory: DeviceFactory, users: Users, pki: Pki
) -> None:
    b = _secured_broker(users, pki, require_cert=True)
    try:
        cert = {"ca": str(pki.ca), "cert": str(pki.client_cert), "key": str(pki.client_key)}
        dev = device_factory(
            heapsize=TLS_HEAP, broker=b.info, device_id=users.device_id, config=_device_config(users, **cert)
        )
        dev.wait_mqtt()
        host = HostMqtt(b.info, "mtls", str(pki.ca), str(pki.client_cert), str(pki.client_key)).connect()
        try:
            assert Journeys(dev, host).via_mqtt("ON", 7).brightness == 7
        finally:
            host.close()
        # without its certificate the device is turned away at the handshake
        bare_cfg = _device_config(users, ca=str(pki.ca))
        bare = device_factory(heapsize=TLS_HEAP, broker=b.info, config=bare_cfg)
        st = _mqtt_status(bare, 0)
        assert st["status"] == "disconnected" and st["detail"].startswith("tls"), st
    finally:
        b.stop()


# --------------------------------------------------------------------------
# (b) a broker whose certificate does not verify is refused
# --------------------------------------------------------------------------


@needs_mosquitto
@pytest.mark.parametrize("why", ["unknown CA", "wrong host name"])
def test_device_refuses_a_broker_whose_certificate_does_not_verify(
    device_factory: DeviceFactory, users: Users, pki: Pki, why: str
) -> None:
    if why == "unknown CA":
        b = _secured_broker(users, pki)
        ca = pki.rogue_ca
    else:  # signed by the trusted CA, but for broker.example, not 127.0.0.1
        b = _secured_broker(
            users, dataclasses.replace(pki, server_cert=pki.wrong_name_cert, server_key=pki.wrong_name_key)
        )
        ca = pki.ca
    try:
        dev = device_factory(
            heapsize=TLS_HEAP, broker=b.info, device_id=users.device_id, config=_device_config(users, ca=str(ca))
        )
        first = _mqtt_status(dev, 0)
        assert first["status"] == "disconnected", first
        assert first["detail"].startswith("tls: certificate verify failed"), first
        second = _mqtt_status(dev, dev.log.cursor)  # it keeps trying, with backoff
        assert second["status"] == "disconnected", second
        st = dev.get()  # and keeps working: the light answers on the console
        assert st.get("mqtt") == "disconnected"
        assert dev.set("ON", 3).get("state") == "ON"
        assert not [e for e in dev.log.events() if e.kind == "mqtt" and e.get("status") == "connected"]
        assert dev.unix is not None and dev.unix.alive
    finally:
        b.stop()


# --------------------------------------------------------------------------
# (c) the ACL: a client without rights cannot command the light
# --------------------------------------------------------------------------


@needs_mosquitto
def test_a_client_without_write_rights_cannot_command_the_light(
    device_factory: DeviceFactory, tls_broker: RunningBroker, users: Users, pki: Pki
) -> None:
    dev = device_factory(
        heapsize=TLS_HEAP,
        broker=tls_broker.info,
        device_id=users.device_id,
        config=_device_config(users, ca=str(pki.ca)),
    )
    dev.wait_mqtt()
    controller = HostMqtt(tls_broker.info, "ctl", ca_file=str(pki.ca)).connect()
    viewer = HostMqtt(_as(tls_broker.info, users.viewer), "view", ca_file=str(pki.ca)).connect()
    try:
        js = Journeys(dev, controller)
        js.via_mqtt("OFF", cmd_id="before-1")
        viewer.subscribe(f"{dev.base}/state")  # reading is allowed
        dsince = dev.log.cursor
        for qos in (0, 1):
            viewer.publish(js.topic("set"), json.dumps({"id": f"sneak-{qos}", "state": "ON", "brightness": 99}), qos)
        after = js.via_mqtt("ON", 5, cmd_id="after-1")  # the broker handled the viewer's publishes before this
        seen = viewer.log.wait_for(lambda e: e.get("id") == "after-1", TIMEOUT, "the viewer reading the state")
        assert seen.get("brightness") == 5
    finally:
        viewer.close()
        controller.close()
    assert not [e for e in dev.log.events(dsince) if str(e.get("id", "")).startswith("sneak-")]
    st = dev.get()
    assert (st.get("seq"), st.get("state"), st.get("brightness")) == (after.seq, "ON", 5)


# --------------------------------------------------------------------------
# (d) credentials never appear in anything printed
# --------------------------------------------------------------------------


def _everything_said(dev: Device) -> str:
    return "\n".join(json.dumps(e.data) for e in dev.log.events()) + "\n" + "\n".join(dev.link.noise)


@needs_mosquitto
def test_credentials_never_appear_in_console_info_errors_or_broker_descriptions(
    device_factory: DeviceFactory, tls_broker: RunningBroker, users: Users, pki: Pki
) -> None:
    secrets_ = users.all_passwords()
    dev = device_factory(
        heapsize=TLS_HEAP,
        broker=tls_broker.info,
        device_id=users.device_id,
        config=_device_config(users, ca=str(pki.ca)),
    )
    dev.wait_mqtt()
    dev.fetch_info()
    dev.set("ON", 9)
    dev.link.write_raw(b'{"op":"set","state":"MAYBE","id":"bad-1"}\n{"op":"nope"}\nnot json\n')
    dev.log.wait_for(lambda e: e.kind == "error" and e.get("id") == "bad-1", TIMEOUT, "the error for bad-1")
    # a device with a wrong password: refused, and says so without the password it tried
    wrong = "wrong-" + secrets.token_urlsafe(12)
    refused = device_factory(
        heapsize=TLS_HEAP,
        broker=tls_broker.info,
        device_id=users.device_id + "x",
        config={"mqtt": {"user": users.device[0], "password": wrong, "ca": str(pki.ca)}},
    )
    st = _mqtt_status(refused, 0)
    assert st["status"] == "disconnected" and "refused" in st["detail"], st
    refused.fetch_info()
    said = _everything_said(dev) + _everything_said(refused)
    shown = [tls_broker.describe(), repr(tls_broker), str(tls_broker.info), repr(tls_broker.info)]
    for s in [*secrets_, wrong]:
        assert s not in said
        for text in shown:
            assert s not in text, text
    assert "***" in repr(tls_broker.info)


@needs_mosquitto
def test_credentials_never_appear_in_the_run_output_or_its_json(users: Users, tmp_path: Path) -> None:
    b = _secured_broker(users, None)  # a password on a plain listener: run takes mqtt://user:pass@...
    try:
        url = f"mqtt://{users.controller[0]}:{users.controller[1]}@{b.info.host}:{b.info.port}"
        out = tmp_path / "run.json"
        args = ["run", "--no-budget", "--broker", url, "--journeys", "mqtt", "--count", "3", "--warmup", "1"]
        args += ["--json", str(out)]
        r = subprocess.run(
            [sys.executable, "-m", "host_harness", *args],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
        )
    finally:
        b.stop()
    assert r.returncode in (0, 1), r.stderr  # 1 would be a broken latency budget: not this test's business
    assert out.exists(), r.stdout + r.stderr
    for text in (r.stdout, r.stderr, out.read_text()):
        assert users.controller[1] not in text
    assert f"{users.controller[0]}:***@" in r.stdout


@needs_mosquitto
def test_run_over_mqtts_with_a_ca(users: Users, pki: Pki, tmp_path: Path) -> None:
    """The main job against a TLS broker: `run --broker mqtts://... --ca FILE`."""
    b = _secured_broker(users, pki)
    try:
        # the device and the host use the controller's account here: it may command and read
        url = f"mqtts://{users.controller[0]}:{users.controller[1]}@localhost:{b.info.port}"
        args = ["run", "--no-budget", "--broker", url, "--ca", str(pki.ca), "--journeys", "mqtt"]
        args += ["--count", "5", "--warmup", "1"]
        r = subprocess.run(
            [sys.executable, "-m", "host_harness", *args], capture_output=True, text=True, timeout=120, cwd=ROOT
        )
    finally:
        b.stop()
    assert r.returncode == 0, r.stdout + r.stderr
    assert "mqtt journeys (closed): 5 confirmed, 0 lost" in r.stdout
    assert users.controller[1] not in r.stdout + r.stderr
