"""MQTT journeys on a Mosquitto started as users start it: ``mosquitto -p PORT``.

A stock Mosquitto leaves Nagle's algorithm on: a small packet it has sent
and the device has not yet ACKed at the TCP level holds the next one it
sends. With QoS 1 state reports, the broker's PUBACK for a report is such a
packet, and the next command waits behind it: for the device's delayed ACK
(40 ms on Linux, lwIP's 250 ms timer on an ESP32), or a round trip of the
link at best. The device sends its reports at QoS 0 (config ``state_qos``),
each followed on the stream by the PUBACK of the command that caused it, so
the broker never sends the device anything but commands. With QoS 1 reports
(``state_qos: 1``) the command's PUBACK is held back to carry the ACK of the
broker's PUBACK, and TCP_QUICKACK (Linux) or an empty QoS 0 PUBLISH (lwIP,
QoS 0 commands) does it otherwise.

These tests look for the delayed-ACK signature: a host -> device hop between
30 and 250 ms, and for the order of packets on the wire. The tuned broker
(``set_tcp_nodelay``) never shows the stall, so only a stock broker can catch
a regression.
"""

from __future__ import annotations

import itertools
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from host_harness.broker.stock import StockMosquitto
from host_harness.dut.device import Device
from host_harness.link.mqtt_client import HostMqtt
from host_harness.measure.clocksync import clock_for
from host_harness.measure.journeys import Journeys
from host_harness.measure.load import closed_loop, open_loop_mqtt
from host_harness.netfault.proxy import FaultProxy
from host_harness.pytest_plugin import DeviceFactory

pytestmark = pytest.mark.unix_only

JOURNEYS = 30
STALL_MS = (30.0, 250.0)  # Linux's delayed ACK (40 ms) .. lwIP's ACK timer (250 ms)
TIMEOUT = 5.0
PUBLISH, PUBACK = 0x30, 0x40  # MQTT packet types (fixed header, high nibble)


@pytest.fixture(scope="module")
def stock() -> Iterator[StockMosquitto]:
    with StockMosquitto() as b:
        yield b


@pytest.fixture
def host(stock: StockMosquitto) -> Iterator[HostMqtt]:
    c = HostMqtt(stock.info, "stock").connect()
    try:
        yield c
    finally:
        c.close()


def _publishing_at(mq: HostMqtt, qos: int) -> HostMqtt:
    """Commands at ``qos``: Home Assistant publishes at the QoS of the
    discovery config, which the device sets to its own (1)."""
    plain = mq.publish

    def publish(topic: str, payload: str | bytes, qos_: int = 0, retain: bool = False) -> int:
        return plain(topic, payload, qos=max(qos, qos_), retain=retain)

    mq.publish = publish  # type: ignore[method-assign,assignment]
    return mq


def _check_no_stall(dev: Device, mq: HostMqtt) -> None:
    dev.wait_mqtt()
    js = Journeys(dev, mq, timeout=TIMEOUT)
    clock = clock_for(dev, mq)[0]
    run = closed_loop(js, "mqtt", JOURNEYS, clock)
    assert not run.lost and not run.errors, (run.lost, run.errors)
    ids = [j.id for j in run.journeys]
    assert len(ids) == JOURNEYS and len(set(ids)) == JOURNEYS  # each confirmed once
    seqs = [j.seq for j in run.journeys]
    assert seqs == list(range(seqs[0], seqs[0] + JOURNEYS))
    h2d = [round(ht.hops["host_to_device"], 2) for ht in run.hop_times]
    stalled = [ms for ms in h2d if STALL_MS[0] <= ms <= STALL_MS[1]]
    assert not stalled, f"host -> device held by the broker (delayed-ACK band {STALL_MS} ms): {h2d}"


@pytest.mark.parametrize("state_qos", [0, 1], ids=["qos0_reports", "qos1_reports"])
@pytest.mark.parametrize("quickack", [True, False], ids=["tcp_quickack", "as_on_lwip"])
def test_qos0_commands_are_not_held_by_a_stock_broker(
    device_factory: DeviceFactory, stock: StockMosquitto, host: HostMqtt, quickack: bool, state_qos: int
) -> None:
    # QoS 1 reports: with TCP_QUICKACK (Linux) the device ACKs the broker's
    # PUBACK at once; without it (lwIP) an empty QoS 0 PUBLISH on
    # <availability>/ack carries the ACK. QoS 0 reports: no PUBACK to hold anything.
    config = {"mqtt": {"quickack": quickack, "state_qos": state_qos}}
    _check_no_stall(device_factory(broker=stock.info, config=config), host)


def _wire(proxy: FaultProxy) -> list[tuple[str, int]]:
    """PUBLISH and PUBACK packets through the proxy, in order, with their direction."""
    wire: list[tuple[str, int]] = []

    def recorder(direction: str) -> Callable[[bytes], bool]:
        def record(p: bytes) -> bool:
            if p[0] & 0xF0 in (PUBLISH, PUBACK):
                wire.append((direction, p[0] & 0xF0))
            return False  # nothing dropped

        return record

    proxy.up.drop_next(recorder("up"), 10**6)
    proxy.down.drop_next(recorder("down"), 10**6)
    return wire


def _pubacks_on_the_wire(
    device_factory: DeviceFactory, stock: StockMosquitto, host: HostMqtt, state_qos: int
) -> tuple[list[tuple[str, int]], list[int]]:
    """Ten QoS 1 commands to a device without TCP_QUICKACK (as on lwIP) through
    a proxy: the PUBLISHes and PUBACKs in order, and where the device's PUBACKs
    stand in it (less the first, which may be the PUBACK of the command before
    the recording began)."""
    with FaultProxy(*stock.info.address).start() as proxy:
        config = {"mqtt": {"quickack": False, "state_qos": state_qos}}
        dev = device_factory(broker=proxy.info_for(stock.info), config=config)
        dev.wait_mqtt()
        js = Journeys(dev, _publishing_at(host, 1), timeout=TIMEOUT)
        js.via_mqtt("OFF")
        wire = _wire(proxy)
        for i in range(10):
            js.via_mqtt("ON", i + 1)
        js.via_mqtt("OFF")  # the tenth PUBACK is through by then
    acks = [k for k, w in enumerate(wire) if w == ("up", PUBACK)]
    assert len(acks) >= 10, wire
    return wire, acks[1:]


def test_a_qos1_command_is_acknowledged_right_after_its_qos0_report(
    device_factory: DeviceFactory, stock: StockMosquitto, host: HostMqtt
) -> None:
    # The default: the report at QoS 0, then the command's PUBACK on the same
    # stream (a command the broker counts as delivered has had its report
    # arrive). The broker sends nothing but the commands: no PUBACK of its own
    # that Nagle could put in front of the next command.
    wire, acks = _pubacks_on_the_wire(device_factory, stock, host, 0)
    early = [k for k in acks if wire[k - 1] != ("up", PUBLISH)]
    assert not early, f"PUBACKs not right after the report they wait for: {wire}"
    assert ("down", PUBACK) not in wire, f"the broker acknowledged a QoS 0 report: {wire}"


def test_with_qos1_reports_a_command_is_acknowledged_after_the_brokers_puback(
    device_factory: DeviceFactory, stock: StockMosquitto, host: HostMqtt
) -> None:
    # Without TCP_QUICKACK (as on lwIP) what carries the device's TCP ACK of
    # the broker's PUBACK is the command's own PUBACK, held back for it. The
    # order on the wire shows it: PUBLISH(command) down, PUBLISH(state) up,
    # PUBACK(state) down, PUBACK(command) up. (Timing cannot show it here:
    # at QoS 1 the host's own link stalls too, and its delay hides this one.)
    wire, acks = _pubacks_on_the_wire(device_factory, stock, host, 1)
    late = [k for k in acks if wire[k - 1] != ("down", PUBACK)]
    assert not late, f"PUBACKs not right after the broker's PUBACK: {wire}"


@pytest.mark.parametrize("state_qos", [0, 1], ids=["qos0_reports", "qos1_reports"])
def test_a_puback_lost_with_the_link_brings_the_command_again_and_it_is_not_applied_twice(
    device_factory: DeviceFactory, stock: StockMosquitto, host: HostMqtt, state_qos: int
) -> None:
    # The command's PUBACK follows its report (QoS 0 reports) or waits for
    # the broker's PUBACK of it (QoS 1); the link dies before it gets out. The
    # broker sends the command again on the persistent session; the device
    # knows its id.
    with FaultProxy(*stock.info.address).start() as proxy:
        config = {"mqtt": {"quickack": False, "state_qos": state_qos}}
        dev = device_factory(broker=proxy.info_for(stock.info), config=config)
        dev.wait_mqtt()
        js = Journeys(dev, _publishing_at(host, 1), timeout=TIMEOUT)
        off_acked = threading.Event()

        def see_puback(p: bytes) -> bool:
            if p[:1] == b"\x40":
                off_acked.set()
            return False  # recorded, not dropped

        proxy.up.drop_next(see_puback, 10**6)
        js.via_mqtt("OFF")  # subscribed, and the device's session is set up
        # With QoS 1 reports the PUBACK of OFF may still be held when the host
        # has its report: the rule below is for held-1's, so wait for OFF's.
        assert off_acked.wait(TIMEOUT), "the PUBACK of the command OFF never passed"
        lost = proxy.up.drop_next(lambda p: p[:1] == b"\x40")  # the device's next PUBACK
        dsince, since = dev.log.cursor, host.log.cursor
        first = js.via_mqtt("ON", 42, cmd_id="held-1")
        lost.wait(TIMEOUT)
        proxy.cut()
        dev.log.wait_for(lambda e: e.kind == "mqtt" and e.get("status") == "connected", 20, "MQTT back", dsince)
        again = host.log.wait_for(
            lambda e: e.topic == js.topic("ack") and e.get("id") == "held-1",
            TIMEOUT,
            "the command held-1 delivered again, answered on .../ack",
            since,
        )
        assert again.get("dup") is True and again.get("seq") == first.seq
        changes = [e for e in dev.log.events(dsince) if e.kind == "change" and e.get("id") == "held-1"]
        assert len(changes) == 1  # applied once
        st = dev.get()
        assert (st.get("seq"), st.get("state"), st.get("brightness")) == (first.seq, "ON", 42)


def test_the_stock_broker_is_stock(stock: StockMosquitto) -> None:
    # What makes it stock: no config file, so no set_tcp_nodelay.
    assert stock.proc is not None and stock.proc.args == [stock.executable, "-p", str(stock.port)]



def _pause(pid: int, after_s: float, for_s: float) -> threading.Thread:
    """Stop the process for ``for_s`` once, ``after_s`` from now (a device busy for a moment)."""

    def run() -> None:
        time.sleep(after_s)
        os.kill(pid, signal.SIGSTOP)
        time.sleep(for_s)
        os.kill(pid, signal.SIGCONT)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_the_host_client_acks_at_once_so_a_stock_broker_does_not_hold_reports_for_the_next_command(
    device_factory: DeviceFactory, stock: StockMosquitto, host: HostMqtt
) -> None:
    # A closed loop puts the host's socket in the kernel's interactive mode
    # (it sends right after it receives), where ACKs wait for the host's next
    # packet. On an open loop, once one report comes later than the next
    # command (here the device stops for 10 ms), a stock broker's Nagle holds
    # every report after it until the host's next command has carried the
    # ACK of the one before: each journey takes a whole period from then on
    # (1.2 ms at p50 at 1000/s, 10 ms at p90 at 100/s in
    # benchmarks/journeys.py). The host's client ACKs every packet it is
    # handed at once (TCP_QUICKACK, link/mqtt_client.ack_now).
    dev = device_factory(broker=stock.info)
    dev.wait_mqtt()
    assert dev.unix is not None and dev.unix.proc is not None
    js = Journeys(dev, host, timeout=TIMEOUT)
    clock = clock_for(dev, host)[0]
    closed_loop(js, "mqtt", 300, clock)
    rate = 500.0
    pause = _pause(dev.unix.proc.pid, 0.1, 0.01)
    run = open_loop_mqtt(js, rate, 500, clock)
    pause.join(5)
    assert not run.lost, run.lost
    # Held: the report waited for the ACK that the host's next command carried,
    # so it reached the host just after that command left. (A report late for
    # another reason, a backlog after a stall of the loaded host, is not tied
    # to the next command.)
    period_ns = 1e9 / rate
    hts = sorted(run.hop_times[60:], key=lambda ht: ht.journey.t_send_ns)  # from 20 ms after the pause
    held = [
        round(a.hops["device_to_host"], 2)
        for a, b in itertools.pairwise(hts)
        if a.hops["device_to_host"] * 1e6 > period_ns / 2 and 0 <= a.journey.t_confirm_ns - b.journey.t_send_ns < 5e5
    ]
    assert len(held) <= 0.05 * len(hts), f"{len(held)} of {len(hts)} reports held for the next command: {held}"


def test_the_hosts_keepalive_ping_does_not_hold_the_next_message(stock: StockMosquitto) -> None:
    # The host's PINGREQ is answered by a PINGRESP that the host must ACK at
    # once: left to its delayed ACK, a stock broker's Nagle holds the next
    # message to the host behind it. paho tells of a PINGRESP only in its log.
    host = HostMqtt(stock.info, "pinger").connect()
    sender = HostMqtt(stock.info, "sender").connect()
    try:
        host.subscribe("ping/after")
        pongs = threading.Event()
        log = host.client.on_log

        def spy(client: object, userdata: object, level: int, buf: str) -> None:
            assert log is not None
            log(client, userdata, level, buf)  # type: ignore[arg-type]
            if buf == "Received PINGRESP":
                pongs.set()

        host.client.on_log = spy
        held = []
        for i in range(8):
            pongs.clear()
            since = host.log.cursor
            host.client._send_pingreq()  # what paho's keepalive sends every 30 s
            assert pongs.wait(TIMEOUT), "no PINGRESP"
            t = sender.publish("ping/after", f'{{"n":{i}}}')
            ev = host.log.wait_for(lambda e, i=i: e.get("n") == i, TIMEOUT, f"message {i} after a ping", since)
            held.append(round((ev.host_ns - t) / 1e6, 2))
        stalled = [ms for ms in held if STALL_MS[0] <= ms <= STALL_MS[1]]
        assert not stalled, f"messages held behind the PINGRESP (delayed-ACK band {STALL_MS} ms): {held}"
    finally:
        sender.close()
        host.close()


@pytest.mark.parametrize("quickack", [True, False], ids=["tcp_quickack", "as_on_lwip"])
def test_the_devices_keepalive_ping_does_not_hold_the_next_command(
    device_factory: DeviceFactory, stock: StockMosquitto, host: HostMqtt, quickack: bool
) -> None:
    # The device's PINGREQ (every second with a 2 s keepalive) is answered by
    # a PINGRESP, a lone small segment: left to the device's delayed ACK (40
    # ms on Linux, lwIP's 250 ms timer), a stock broker's Nagle holds the next
    # command behind it. The device ACKs it at once: TCP_QUICKACK, or (as on
    # lwIP) an empty QoS 0 PUBLISH the broker answers with nothing.
    dev = device_factory(broker=stock.info, keepalive=2, config={"mqtt": {"quickack": quickack}})
    dev.wait_mqtt()
    js = Journeys(dev, host, timeout=TIMEOUT)
    clock = clock_for(dev, host)[0]
    run = open_loop_mqtt(js, 100.0, 400, clock)  # 4 s: 4 pings
    assert not run.lost, run.lost
    h2d = [round(ht.hops["host_to_device"], 2) for ht in run.hop_times]
    stalled = [ms for ms in h2d if STALL_MS[0] <= ms <= STALL_MS[1]]
    assert not stalled, f"commands held behind the device's PINGRESP (band {STALL_MS} ms): {stalled}"
