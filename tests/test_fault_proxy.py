"""The fault-injecting proxy: real sockets, a real broker, a real Unix-port device."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import statistics
import threading
import time
from collections.abc import Iterator

import pytest

from host_harness.broker.info import parse_broker_url
from host_harness.broker.running import RunningBroker
from host_harness.core.events import WaitTimeout
from host_harness.dut.device import Device
from host_harness.link.mqtt_client import HostMqtt, publish_packet
from host_harness.measure.journeys import Journeys
from host_harness.netfault.framing import MqttFramer, mqtt_publish_payload, mqtt_publish_topic
from host_harness.netfault.proxy import FaultProxy
from host_harness.pytest_plugin import DeviceFactory

TIMEOUT = 5.0


# --------------------------------------------------------------------------
# helpers: an echo server, MQTT packets, socket reads with deadlines
# --------------------------------------------------------------------------


class EchoServer:
    """Echoes every byte back on each connection, one thread per connection."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.conns: list[socket.socket] = []
        self.threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        t = threading.Thread(target=self._accept, name="echo-accept", daemon=True)
        t.start()
        self.threads.append(t)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            t = threading.Thread(target=self._echo, args=(conn,), name="echo-conn", daemon=True)
            with self._lock:
                self.conns.append(conn)
                self.threads.append(t)
            t.start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            try:
                while data := conn.recv(65536):
                    conn.sendall(data)
                conn.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        with self._lock:
            conns, threads = list(self.conns), list(self.threads)
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
        for t in threads:
            t.join(TIMEOUT)
            assert not t.is_alive(), f"echo server thread {t.name} did not stop"


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    s = EchoServer()
    yield s
    s.stop()


@pytest.fixture
def echo_proxy(echo: EchoServer) -> Iterator[FaultProxy]:
    with FaultProxy("127.0.0.1", echo.port).start() as p:
        yield p


def connect(proxy: FaultProxy) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", proxy.port), timeout=TIMEOUT)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def recv_exactly(sock: socket.socket, n: int, timeout: float = TIMEOUT, what: str = "echo") -> bytes:
    sock.settimeout(timeout)
    got = bytearray()
    while len(got) < n:
        try:
            chunk = sock.recv(n - len(got))
        except TimeoutError:
            raise WaitTimeout(f"timed out after {timeout:g} s waiting for {what}: got {len(got)}/{n} bytes") from None
        if not chunk:
            raise AssertionError(f"connection closed while waiting for {what}: got {len(got)}/{n} bytes")
        got += chunk
    return bytes(got)


def assert_silent(sock: socket.socket, seconds: float, what: str) -> None:
    sock.settimeout(seconds)
    try:
        data = sock.recv(65536)
    except TimeoutError:
        return
    raise AssertionError(f"expected nothing for {seconds:g} s ({what}), got {data[:60]!r}")


def closed_by_peer(sock: socket.socket, timeout: float = TIMEOUT) -> str:
    """'reset' or 'eof' once the peer has closed; AssertionError if it stays open."""
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        return "reset"
    except TimeoutError:
        raise AssertionError(f"connection still open {timeout:g} s after it should have been closed") from None
    return "eof"


PINGREQ = b"\xc0\x00"


# --------------------------------------------------------------------------
# MQTT framing (pure functions)
# --------------------------------------------------------------------------


def test_publish_topic_and_payload_are_parsed_from_whole_packets() -> None:
    p0 = publish_packet("lightctl/x/state", b'{"id":"a"}')
    p1 = publish_packet("a/b", b"x" * 300, qos=1, pid=7, retain=True)
    assert (mqtt_publish_topic(p0), mqtt_publish_payload(p0)) == ("lightctl/x/state", b'{"id":"a"}')
    assert (mqtt_publish_topic(p1), mqtt_publish_payload(p1)) == ("a/b", b"x" * 300)
    for other in (PINGREQ, b"\x90\x03\x00\x01\x00", p0[:-3], b"", b"\x30"):
        assert mqtt_publish_topic(other) is None and mqtt_publish_payload(other) is None


def test_framer_finds_packet_boundaries_whatever_the_chunking() -> None:
    packets = [
        publish_packet("t/1", b"a"),
        PINGREQ,
        publish_packet("t/2", os.urandom(20000), qos=1),  # 3-byte remaining length
        b"\xd0\x00",
    ]
    stream = b"".join(packets)
    for size in (1, 2, 3, 7, 1000, len(stream)):
        framer, found, cur = MqttFramer(), [], bytearray()
        for i in range(0, len(stream), size):
            for piece in framer.split(stream[i : i + size]):
                assert piece.framed
                assert piece.start == (not cur)
                cur += piece.data
                if piece.end:
                    found.append(bytes(cur))
                    cur.clear()
        assert found == packets, f"chunk size {size}"
    broken = MqttFramer()
    assert not broken.split(b"\x00 not mqtt")[0].framed and broken.broken


# --------------------------------------------------------------------------
# raw streams through an echo server
# --------------------------------------------------------------------------


def test_bytes_pass_through_unchanged_both_ways_and_are_counted(echo_proxy: FaultProxy) -> None:
    data = os.urandom(1_000_000)
    with connect(echo_proxy) as s:
        assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        sender = threading.Thread(target=s.sendall, args=(data,), daemon=True)
        sender.start()
        assert recv_exactly(s, len(data), what="1 MB echoed back") == data
        sender.join(TIMEOUT)
        s.shutdown(socket.SHUT_WR)
        assert closed_by_peer(s) == "eof"  # a FIN travels both ways, orderly
    st = echo_proxy.stats()
    assert st.connections_accepted == 1
    assert st.up.bytes_received == st.up.bytes_forwarded == len(data)
    assert st.down.bytes_forwarded == len(data)
    assert st.up.bytes_dropped == st.down.bytes_dropped == 0


def test_delay_holds_each_chunk_for_the_delay_without_serialising_them(echo_proxy: FaultProxy) -> None:
    echo_proxy.up.delay_s = 0.3
    n, gap = 10, 0.03
    with connect(echo_proxy) as s:
        t0 = time.monotonic()
        for i in range(n):
            s.sendall(b"%04d" % i)
            time.sleep(gap)
        first = recv_exactly(s, 4, what="the first delayed chunk")
        t_first = time.monotonic() - t0
        rest = recv_exactly(s, 4 * (n - 1), what="the other delayed chunks")
        t_all = time.monotonic() - t0
    assert first + rest == b"".join(b"%04d" % i for i in range(n))
    assert t_first >= 0.28, f"the first chunk came back after {t_first:.3f} s, before the 0.3 s delay"
    # serialised it would take n * 0.3 = 3 s; held in parallel about 0.3 + n * gap = 0.6 s
    assert t_all < 1.8, f"{n} chunks took {t_all:.3f} s: delays were serialised"


def test_jitter_keeps_the_order_of_many_small_messages(echo_proxy: FaultProxy) -> None:
    echo_proxy.set("both", delay_s=0.02, jitter_s=0.05)
    msgs = [b"<%05d>" % i for i in range(300)]
    with connect(echo_proxy) as s:
        for m in msgs:
            s.sendall(m)
            if len(m) and int(m[1:6]) % 10 == 0:
                time.sleep(0.002)  # spread them over many chunks
        got = recv_exactly(s, sum(map(len, msgs)), what="300 jittered messages")
    assert got == b"".join(msgs)
    assert echo_proxy.stats().up.bytes_held == 0


def test_blackhole_drops_and_pause_holds_while_the_connection_stays_open(echo_proxy: FaultProxy) -> None:
    with connect(echo_proxy) as s:
        s.sendall(b"hello")
        assert recv_exactly(s, 5) == b"hello"
        echo_proxy.up.blackhole = True
        s.sendall(b"lost")
        assert_silent(s, 0.3, "bytes sent into a blackhole")
        echo_proxy.up.blackhole = False
        s.sendall(b"after")
        assert recv_exactly(s, 5, what="bytes sent after the blackhole") == b"after"

        echo_proxy.down.paused = True
        s.sendall(b"held")
        assert_silent(s, 0.3, "bytes held by a pause")
        assert echo_proxy.stats().down.bytes_held == 4
        echo_proxy.down.paused = False
        assert recv_exactly(s, 4, what="held bytes after unpausing") == b"held"
    st = echo_proxy.stats()
    assert st.up.bytes_dropped == 4 and st.down.bytes_dropped == 0
    assert st.connections_cut == 0


def test_cut_resets_every_connection_and_refuse_turns_new_ones_away(echo_proxy: FaultProxy) -> None:
    a, b = connect(echo_proxy), connect(echo_proxy)
    with a, b:
        for s in (a, b):
            s.sendall(b"x")
            assert recv_exactly(s, 1) == b"x"
        echo_proxy.set("both", blackhole=True)  # a partition TCP would not notice...
        assert echo_proxy.cut() == 2  # ...until the connections are reset
        assert closed_by_peer(a) == "reset" and closed_by_peer(b) == "reset"
    echo_proxy.set("both", blackhole=False)
    with connect(echo_proxy) as c:
        c.sendall(b"again")
        assert recv_exactly(c, 5, what="echo on a new connection after cut()") == b"again"
        assert echo_proxy.cut(refuse=True) == 1
        assert closed_by_peer(c) == "reset"
    try:  # the reset may come before connect() returns
        d = connect(echo_proxy)
    except ConnectionResetError:
        pass
    else:
        with d:
            assert closed_by_peer(d) in ("reset", "eof")
    echo_proxy.refuse = False
    with connect(echo_proxy) as e:
        e.sendall(b"ok")
        assert recv_exactly(e, 2, what="echo once refuse is off") == b"ok"
    st = echo_proxy.stats()
    assert (st.connections_accepted, st.connections_refused, st.connections_cut) == (4, 1, 3)


def test_drop_next_up_drops_whole_packets_split_across_chunks(echo_proxy: FaultProxy) -> None:
    keep = publish_packet("a/keep", b"k")
    doomed = publish_packet("a/drop", b"d" * 300, qos=1, pid=9)  # 2-byte remaining length
    again = publish_packet("a/drop", b"second")
    stream = keep + PINGREQ + doomed + again
    rule = echo_proxy.drop_next_up(lambda p: mqtt_publish_topic(p) == "a/drop")
    with connect(echo_proxy) as s:
        for i in range(0, len(stream), 7):  # packets and headers split across chunks
            s.sendall(stream[i : i + 7])
            time.sleep(0.001)
        expected = keep + PINGREQ + again  # only the next one matching is dropped
        assert recv_exactly(s, len(expected), what="the packets that were not dropped") == expected
    assert rule.wait(0) == [doomed] and rule.done
    st = echo_proxy.stats()
    assert (st.up.packets_forwarded, st.up.packets_dropped, st.up.bytes_dropped) == (3, 1, len(doomed))
    assert st.down.packets_forwarded == 3


def test_stop_leaves_no_thread_and_closes_the_port(echo: EchoServer) -> None:
    before = {t.ident for t in threading.enumerate()}
    proxy = FaultProxy("127.0.0.1", echo.port).start()
    port = proxy.port
    s = connect(proxy)
    with s:
        s.sendall(b"x")
        assert recv_exactly(s, 1) == b"x"
        proxy.down.delay_s = 3.0  # held bytes must not keep stop() waiting
        s.sendall(b"y")
        t0 = time.monotonic()
        proxy.stop()
        assert time.monotonic() - t0 < 2.0
        assert closed_by_peer(s) == "reset"
    leftover = [t.name for t in threading.enumerate() if t.ident not in before and not t.name.startswith("echo")]
    assert leftover == []
    assert not proxy.running
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT).close()
    proxy.stop()  # idempotent
    with pytest.raises(RuntimeError, match="not running"):
        proxy.cut()


def test_info_for_points_at_the_proxy_with_the_same_credentials(echo_proxy: FaultProxy) -> None:
    info = parse_broker_url("mqtt://user:p%40ss@localhost:1883")
    via = echo_proxy.info_for(info)
    assert (via.kind, via.host, via.port) == ("proxy", "127.0.0.1", echo_proxy.port)
    assert (via.username, via.password, via.tls) == ("user", "p@ss", False)
    assert via.url == f"mqtt://user:p%40ss@127.0.0.1:{echo_proxy.port}"
    again = parse_broker_url(via.url)
    assert (again.host, again.port, again.username, again.password) == (via.host, via.port, "user", "p@ss")
    assert "p@ss" not in repr(via)


# --------------------------------------------------------------------------
# MQTT: the real broker and the real device
# --------------------------------------------------------------------------


@pytest.fixture
def broker_proxy(broker: RunningBroker) -> Iterator[FaultProxy]:
    with FaultProxy(*broker.info.address).start() as p:
        yield p


@pytest.mark.needs_config  # the device reaches its broker through the proxy
def test_transparent_mqtt_journey_through_the_proxy(
    broker: RunningBroker, broker_proxy: FaultProxy, device_factory: DeviceFactory
) -> None:
    dev = device_factory(broker=broker_proxy.info_for(broker.info))
    dev.wait_mqtt()
    mq = HostMqtt(broker_proxy.info_for(broker.info), "through-proxy").connect()
    try:
        j = Journeys(dev, mq).via_mqtt("ON", 77)
    finally:
        mq.close()
    assert (j.state, j.brightness, j.src) == ("ON", 77, "mqtt")
    st = broker_proxy.stats()
    assert st.connections_accepted >= 2
    assert st.up.packets_forwarded > 0 and st.down.packets_forwarded > 0
    assert st.up.bytes_dropped == st.down.bytes_dropped == 0


def _median_e2e_ms(js: Journeys, n: int) -> float:
    return statistics.median(js.via_mqtt("ON" if i % 2 else "OFF").e2e_ms for i in range(n))


@pytest.mark.needs_config  # the device reaches its broker through the proxy
def test_down_delay_adds_to_the_journey_and_keeps_commands_in_order(
    broker: RunningBroker, broker_proxy: FaultProxy, device_factory: DeviceFactory, mqtt: HostMqtt
) -> None:
    dev = device_factory(broker=broker_proxy.info_for(broker.info))
    dev.wait_mqtt()
    js = Journeys(dev, mqtt)
    base_ms = _median_e2e_ms(js, 3)
    broker_proxy.down.delay_s = 0.3  # broker -> device: the command arrives late
    delayed_ms = _median_e2e_ms(js, 3)
    extra_s = (delayed_ms - base_ms) / 1000
    assert 0.25 <= extra_s <= 1.5, f"journey went from {base_ms:.1f} ms to {delayed_ms:.1f} ms"

    broker_proxy.down.jitter_s = 0.1
    since = dev.log.cursor
    ids = [f"order-{i}" for i in range(30)]
    t0 = time.monotonic()
    for i, cid in enumerate(ids):
        mqtt.publish(js.topic("set"), json.dumps({"id": cid, "brightness": i + 1}))
    dev.log.wait_for(lambda e: e.kind == "change" and e.get("id") == ids[-1], 10, f"the change of {ids[-1]}", since)
    took = time.monotonic() - t0
    applied = [e.get("id") for e in dev.log.events(since) if e.kind == "change" and e.get("id") in ids]
    assert broker_proxy.stats().down.bytes_dropped == 0
    others = [e.data for e in dev.log.events(since) if e.kind != "change"]
    assert applied == ids, f"missing {sorted(set(ids) - set(applied))}; other device events: {others}"
    assert took < 4.0, f"30 commands under a 0.3 s delay took {took:.2f} s: delays were serialised"


@pytest.mark.needs_config  # the device reaches its broker through the proxy
def test_blackhole_goes_unnoticed_until_cut_then_the_device_reconnects(
    broker: RunningBroker, broker_proxy: FaultProxy, device_factory: DeviceFactory, mqtt: HostMqtt
) -> None:
    dev = device_factory(broker=broker_proxy.info_for(broker.info))
    dev.wait_mqtt()
    js = Journeys(dev, mqtt)
    js.via_mqtt("ON", 10)
    since = dev.log.cursor
    broker_proxy.set("both", blackhole=True)
    with pytest.raises(WaitTimeout, match="lost-in-partition"):
        js.via_mqtt("OFF", cmd_id="lost-in-partition", timeout=0.7)
    noticed = [e.data for e in dev.log.events(since) if e.kind == "mqtt" or e.get("id") == "lost-in-partition"]
    assert noticed == [], "the command crossed the partition, or the device noticed it"
    assert broker_proxy.stats().down.bytes_dropped > 0

    broker_proxy.set("both", blackhole=False)
    assert broker_proxy.cut() == 1
    down = dev.log.wait_for(
        lambda e: e.kind == "mqtt" and e.get("status") == "disconnected", TIMEOUT, "MQTT down after cut()", since
    )
    dev.log.wait_for(
        lambda e: e.kind == "mqtt" and e.get("status") == "connected",
        10,
        "MQTT connected again after the cut",
        down.index,
    )
    j = js.via_mqtt("OFF", 20)
    assert (j.state, j.brightness) == ("OFF", 20)
    assert broker_proxy.stats().connections_accepted == 2


@pytest.mark.needs_config  # the device reaches its broker through the proxy
def test_a_lost_confirmation_means_applied_but_reported_failed(
    broker: RunningBroker, broker_proxy: FaultProxy, device: Device
) -> None:
    """The host talks through the proxy; the device's state report to it is lost."""
    device.wait_mqtt()
    mq = HostMqtt(broker_proxy.info_for(broker.info), "app").connect()
    try:
        js = Journeys(device, mq)
        js.via_mqtt("OFF")  # subscribed; retained messages are behind us
        state_t = js.topic("state")
        rule = broker_proxy.drop_next_down(lambda p: mqtt_publish_topic(p) == state_t)
        with pytest.raises(WaitTimeout, match="charge-1"):
            js.via_mqtt("ON", 100, cmd_id="charge-1", timeout=1.0)
        ev = device.log.wait_for(lambda e: e.kind == "change" and e.get("id") == "charge-1", TIMEOUT, "change")
        assert (ev.get("state"), ev.get("brightness")) == ("ON", 100)  # applied on the device
        (lost,) = rule.wait(0)
        assert json.loads(mqtt_publish_payload(lost) or b"{}").get("id") == "charge-1"
        assert broker_proxy.stats().down.packets_dropped == 1
        j = js.via_mqtt("OFF")  # the rule is used up: later confirmations arrive
        assert j.seq == ev.get("seq") + 1
    finally:
        mq.close()
