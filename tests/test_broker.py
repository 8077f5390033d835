"""Tests for host_harness.broker, against real brokers (no mocks)."""

from __future__ import annotations

import queue
import re
import socket
import stat
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.client import CallbackAPIVersion

from host_harness.broker.amqtt import AmqttBroker
from host_harness.broker.info import BrokerInfo, parse_broker_url
from host_harness.broker.mosquitto import MosquittoBroker, find_mosquitto
from host_harness.broker.running import ExternalBroker, RunningBroker, free_port
from host_harness.broker.start import start_broker

WAIT = 5.0  # seconds; every wait in these tests is bounded by this

MOSQUITTO = find_mosquitto()
needs_mosquitto = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto is not installed")


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


class Client:
    """A paho client with blocking, time-bounded helpers."""

    def __init__(self, info: BrokerInfo, name: str) -> None:
        self.info = info
        self.name = name
        self.mqtt = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"{name}-{uuid.uuid4().hex[:8]}"
        )
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self._connected = threading.Event()
        self._subacks: queue.Queue[int] = queue.Queue()
        self.mqtt.on_connect = self._on_connect
        self.mqtt.on_message = lambda _c, _u, msg: self.messages.put(msg)
        self.mqtt.on_subscribe = self._on_subscribe

    def _on_connect(self, _c: mqtt.Client, _u: object, _f: object, reason_code: object, _p: object) -> None:
        if not getattr(reason_code, "is_failure", True):
            self._connected.set()

    def _on_subscribe(self, _c: mqtt.Client, _u: object, mid: int, codes: list[object], _p: object) -> None:
        assert not any(getattr(code, "is_failure", True) for code in codes), f"{self.name}: SUBACK {codes}"
        self._subacks.put(mid)

    def connect(self) -> Client:
        self.mqtt.connect(self.info.host, self.info.port, keepalive=30)
        self.mqtt.loop_start()
        if not self._connected.wait(WAIT):
            pytest.fail(f"{self.name}: no CONNACK from {self.info} within {WAIT}s")
        return self

    def subscribe(self, topic: str) -> None:
        rc, mid = self.mqtt.subscribe(topic, qos=1)
        assert rc == mqtt.MQTT_ERR_SUCCESS
        try:
            assert self._subacks.get(timeout=WAIT) == mid
        except queue.Empty:
            pytest.fail(f"{self.name}: no SUBACK for {topic!r} within {WAIT}s")

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        info = self.mqtt.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(timeout=WAIT)
        assert info.is_published(), f"{self.name}: no PUBACK for {topic!r} within {WAIT}s"

    def next_message(self) -> mqtt.MQTTMessage:
        try:
            return self.messages.get(timeout=WAIT)
        except queue.Empty:
            pytest.fail(f"{self.name}: no message within {WAIT}s")

    def close(self) -> None:
        self.mqtt.disconnect()
        self.mqtt.loop_stop()

    def drop_connection(self) -> None:
        """Vanish without DISCONNECT, like a device losing power."""
        self.mqtt.loop_stop()
        sock = self.mqtt.socket()
        assert isinstance(sock, socket.socket)
        sock.shutdown(socket.SHUT_RDWR)
        sock.close()


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    made: list[Client] = []
    yield made
    for client in made:
        client.close()


def topic(name: str) -> str:
    return f"lightctl-test/{uuid.uuid4().hex[:8]}/{name}"


def assert_not_listening(port: int) -> None:
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


# --------------------------------------------------------------------------
# URL parsing
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "host", "port", "user", "password", "tls", "canonical"),
    [
        ("mqtt://broker.lan", "broker.lan", 1883, None, None, False, "mqtt://broker.lan:1883"),
        ("mqtts://broker.lan", "broker.lan", 8883, None, None, True, "mqtts://broker.lan:8883"),
        ("MQTT://Broker.lan:1999/", "broker.lan", 1999, None, None, False, "mqtt://broker.lan:1999"),
        ("mqtt://alice@10.0.0.2:2000", "10.0.0.2", 2000, "alice", None, False, "mqtt://alice@10.0.0.2:2000"),
        ("mqtt://alice:s3cret@h:1", "h", 1, "alice", "s3cret", False, "mqtt://alice:s3cret@h:1"),
        ("mqtts://a%40b:p%3Aw@[::1]:8884", "::1", 8884, "a@b", "p:w", True, "mqtts://a%40b:p%3Aw@[::1]:8884"),
        ("  mqtt://h:65535  ", "h", 65535, None, None, False, "mqtt://h:65535"),
    ],
)
def test_parse_url(
    url: str, host: str, port: int, user: str | None, password: str | None, tls: bool, canonical: str
) -> None:
    info = parse_broker_url(url)
    assert (info.kind, info.host, info.port, info.username, info.password, info.tls, info.url) == (
        "external",
        host,
        port,
        user,
        password,
        tls,
        canonical,
    )
    assert not info.embedded
    assert parse_broker_url(info.url) == info  # canonical URL round-trips


def test_redaction() -> None:
    info = parse_broker_url("mqtt://user:hunter2@host")
    assert info.redacted_url() == "mqtt://user:***@host:1883"
    assert str(info) == "mqtt://user:***@host:1883"
    for text in (
        repr(info),
        str(info),
        f"{info}",
        info.redacted_url(),
        repr(ExternalBroker(info)),
        ExternalBroker(info).describe(),
    ):
        assert "hunter2" not in text
    assert "password='***'" in repr(info)
    assert info.url == "mqtt://user:hunter2@host:1883"  # still usable for connecting
    assert parse_broker_url("mqtt://user@host").redacted_url() == "mqtt://user@host:1883"
    assert "password=None" in repr(parse_broker_url("mqtt://host"))


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://host", "unsupported scheme 'http'"),
        ("tcp://u:hunter2@host", "unsupported scheme 'tcp'"),
        ("host:1883", "expected mqtt://"),
        ("", "empty"),
        ("mqtt://", "no host"),
        ("mqtt://:1883", "no host"),
        ("mqtt://host:abc", "invalid port 'abc'"),
        ("mqtt://u:hunter2@host:99999", "invalid port '99999'"),
        ("mqtt://host:0", "invalid port '0'"),
        ("mqtt://host:-1", "invalid port"),
        ("mqtt://host/some/path", "unexpected path"),
        ("mqtt://host?x=1", "unexpected path"),
        ("mqtt://:hunter2@host", "password but no user name"),
        ("mqtt://[::1", "invalid broker URL"),
    ],
)
def test_parse_url_errors(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)) as err:
        parse_broker_url(url)
    assert "hunter2" not in str(err.value)


def test_start_broker_external_url() -> None:
    with start_broker("mqtt://user:hunter2@192.0.2.1") as broker:  # TEST-NET: never contacted
        assert isinstance(broker, ExternalBroker)
        assert broker.info.kind == "external"
        assert broker.describe() == "external broker mqtt://user:***@192.0.2.1:1883"
        with pytest.raises(RuntimeError, match="cannot restart external broker"):
            broker.restart()
        broker.stop()  # no-op
        assert broker.running


def test_start_broker_argument_errors() -> None:
    with pytest.raises(ValueError, match="prefer must be one of"):
        start_broker(prefer="rabbitmq")
    with pytest.raises(ValueError, match="conflicting"):
        start_broker("amqtt", prefer="mosquitto")
    with pytest.raises(ValueError, match="makes no sense"):
        start_broker("mqtt://host", prefer="amqtt")
    with pytest.raises(ValueError, match="unsupported scheme"):
        start_broker("amqp://host")
    with pytest.raises(RuntimeError, match="not found"):
        start_broker(prefer="mosquitto", mosquitto_path="/nonexistent/mosquitto")


def test_free_port() -> None:
    port = free_port()
    assert 1024 <= port <= 65535
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


# --------------------------------------------------------------------------
# Real brokers: retained messages and last will
# --------------------------------------------------------------------------


@pytest.fixture(
    scope="module",
    params=[pytest.param("mosquitto", marks=needs_mosquitto), "amqtt"],
)
def broker(request: pytest.FixtureRequest) -> Iterator[RunningBroker]:
    with start_broker(request.param) as running:
        assert running.info.kind == request.param
        yield running


def test_retained_message(broker: RunningBroker, clients: list[Client]) -> None:
    retained = topic("retained")
    publisher = Client(broker.info, "pub")
    clients.append(publisher)
    publisher.connect().publish(retained, b"on", retain=True)

    late = Client(broker.info, "late-sub")
    clients.append(late)
    late.connect().subscribe(retained)
    msg = late.next_message()
    assert (msg.topic, msg.payload, msg.retain) == (retained, b"on", True)


def test_no_unsolicited_retained_messages(broker: RunningBroker, clients: list[Client]) -> None:
    """A client gets only the retained messages of its own subscriptions.

    Regression test for amqtt 0.12.1, which sent every connecting client the
    retained messages matching anybody's subscriptions (patched in host_harness/broker/amqtt.py).
    """
    others = topic("others")
    holder = Client(broker.info, "holder")
    clients.append(holder)
    holder.connect().publish(others, b"state", retain=True)
    holder.subscribe(others)
    assert holder.next_message().payload == b"state"

    newcomer = Client(broker.info, "newcomer")
    clients.append(newcomer)
    own = topic("own")
    newcomer.connect().subscribe(own)
    newcomer.publish(own, b"marker")
    msg = newcomer.next_message()  # an unsolicited retained message would come first
    assert (msg.topic, msg.payload) == (own, b"marker")


def test_last_will_on_abrupt_disconnect(broker: RunningBroker, clients: list[Client]) -> None:
    will_topic = topic("status")
    watcher = Client(broker.info, "watcher")
    clients.append(watcher)
    watcher.connect().subscribe(will_topic)

    device = Client(broker.info, "device")
    device.mqtt.will_set(will_topic, b"offline", qos=1, retain=False)
    device.connect()
    device.publish(will_topic, b"online")
    assert watcher.next_message().payload == b"online"

    device.drop_connection()
    msg = watcher.next_message()
    assert (msg.topic, msg.payload) == (will_topic, b"offline")


# --------------------------------------------------------------------------
# Lifecycle
# --------------------------------------------------------------------------


@needs_mosquitto
def test_mosquitto_lifecycle_and_restart(clients: list[Client]) -> None:
    broker = start_broker(prefer="mosquitto", mosquitto_path=MOSQUITTO)
    try:
        assert isinstance(broker, MosquittoBroker)
        info = broker.info
        assert (info.kind, info.host, info.tls, info.username) == ("mosquitto", "127.0.0.1", False, None)
        assert info.url == f"mqtt://127.0.0.1:{info.port}"
        assert re.fullmatch(
            rf"mosquitto \d+\.\d+\S* \(stock settings\) on mqtt://127\.0\.0\.1:{info.port}; "
            r"set_tcp_nodelay false \(stock\), max_inflight_messages 20, max_queued_messages 1000",
            broker.describe(),
        )
        assert broker.tmpdir is not None and broker.log_path is not None
        tmpdir = broker.tmpdir
        conf = (tmpdir / MosquittoBroker.CONF_NAME).read_text()
        for line in (
            f"listener {info.port} 127.0.0.1",
            "allow_anonymous true",
            "persistence false",
            f"log_dest file {broker.log_path}",
        ):
            assert line in conf.splitlines()
        # Stock settings, as users run it: Nagle's algorithm stays on.
        assert not any(line.startswith("set_tcp_nodelay") for line in conf.splitlines())
        assert broker.log_path.exists()

        # A connected client sees the restart as a dropped connection.
        Client(info, "before").connect().close()
        old = broker.process
        assert old is not None
        broker.restart()
        assert broker.info.port == info.port
        assert broker.process is not None and broker.process.pid != old.pid
        assert old.poll() is not None
        assert broker.running
        after = Client(broker.info, "after")
        clients.append(after)
        after.connect()
        after.publish(topic("x"), b"still works")
        after.close()
        clients.remove(after)

        proc = broker.process
        broker.stop()
        assert proc.poll() is not None
        assert not broker.running
        assert not tmpdir.exists()
        assert_not_listening(info.port)
        broker.stop()  # idempotent
    finally:
        broker.stop()


@needs_mosquitto
def test_mosquitto_tuned_turns_nagle_off() -> None:
    with start_broker("mosquitto-tuned", mosquitto_path=MOSQUITTO) as broker:
        assert isinstance(broker, MosquittoBroker) and broker.tmpdir is not None
        conf = (broker.tmpdir / MosquittoBroker.CONF_NAME).read_text().splitlines()
        assert "set_tcp_nodelay true" in conf
        assert "(tuned)" in broker.describe() and "set_tcp_nodelay true" in broker.describe()
        Client(broker.info, "tuned").connect().close()


def test_amqtt_lifecycle_and_restart() -> None:
    before = set(threading.enumerate())
    broker = start_broker("amqtt")
    try:
        assert isinstance(broker, AmqttBroker)
        info = broker.info
        assert (info.kind, info.host, info.url) == ("amqtt", "127.0.0.1", f"mqtt://127.0.0.1:{info.port}")
        assert re.fullmatch(
            rf"amqtt \S+ \(embedded, in-process\) on mqtt://127\.0\.0\.1:{info.port}; "
            r"TCP_NODELAY on \(set by the harness\)",
            broker.describe(),
        )
        thread = broker.thread
        assert thread is not None and thread.is_alive()
        Client(info, "c1").connect().close()

        broker.restart()
        assert broker.info.port == info.port
        assert not thread.is_alive()
        thread = broker.thread
        assert thread is not None and thread.is_alive()
        client = Client(broker.info, "c2").connect()  # left connected on purpose: stop must not hang
        client.mqtt.loop_stop()
    finally:
        broker.stop()
    assert not broker.running
    assert not thread.is_alive()
    assert set(threading.enumerate()) <= before
    assert_not_listening(info.port)
    broker.stop()  # idempotent


def test_amqtt_restart_after_its_shutdown_fails() -> None:
    """amqtt closes its listening sockets only once its shutdown completes;
    when that raises, the harness closes them itself, so a restart on the
    same port binds and serves again."""
    broker = start_broker("amqtt")
    try:
        assert isinstance(broker, AmqttBroker)
        port = broker.info.port
        client = Client(broker.info, "held").connect()  # a session still open at shutdown
        client.mqtt.loop_stop()
        running = broker._broker  # the failure is injected into amqtt itself
        assert running is not None

        async def fail() -> None:
            raise RuntimeError("shutdown failed (injected)")

        running.shutdown = fail  # type: ignore[method-assign]
        broker.restart()
        assert broker.info.port == port
        sub = Client(broker.info, "after").connect()
        t = topic("after-restart")
        sub.subscribe(t)
        sub.publish(t, b"up")
        assert sub.next_message().payload == b"up"
        sub.close()
    finally:
        broker.stop()
    assert_not_listening(port)


def test_context_manager_stops() -> None:
    with start_broker(prefer="amqtt") as broker:
        port = broker.info.port
        assert broker.running
    assert not broker.running
    assert_not_listening(port)


@needs_mosquitto
def test_auto_prefers_mosquitto() -> None:
    with start_broker(mosquitto_path=MOSQUITTO) as broker:
        assert broker.info.kind == "mosquitto"


def test_mosquitto_early_exit_reports_log(tmp_path: Path) -> None:
    fake = tmp_path / "mosquitto"
    fake.write_text("#!/bin/sh\necho 'Error: something broke' >&2\nexit 3\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    with pytest.raises(RuntimeError) as err:
        start_broker(mosquitto_path=str(fake))
    text = str(err.value)
    assert "mosquitto" in text and "exited with code 3" in text and "Error: something broke" in text
