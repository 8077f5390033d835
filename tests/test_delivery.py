"""Charge once, confirm reliably: idempotent command ids, MQTT QoS 1 both ways,
a persistent session, the state restored after a power cut, and Home Assistant
discovery. Real interpreter, real broker, real sockets (and a real fault proxy)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from host_harness.broker.info import BrokerInfo
from host_harness.broker.running import RunningBroker
from host_harness.core.events import Event, WaitTimeout
from host_harness.core.ids import IdMaker
from host_harness.dut.device import Device
from host_harness.image.firmware_constants import firmware_int
from host_harness.link.mqtt_client import HostMqtt
from host_harness.measure.journeys import Journeys
from host_harness.netfault.framing import mqtt_publish_payload, mqtt_publish_topic
from host_harness.netfault.proxy import FaultProxy
from host_harness.pytest_plugin import DeviceFactory

TIMEOUT = 5.0
RECENT_IDS = firmware_int("light", "_SEEN")  # commands remembered by id
RETRY_S = firmware_int("mqtt_keep", "_RETRY_MS") / 1000  # an unacknowledged PUBLISH is sent again after this
DUP = 0x08  # MQTT fixed-header DUP flag


def _state(ev: Event) -> tuple[Any, Any, Any]:
    return ev.get("seq"), ev.get("state"), ev.get("brightness")


# --------------------------------------------------------------------------
# idempotent commands
# --------------------------------------------------------------------------


def test_a_repeated_serial_command_is_answered_with_its_original_event_and_not_applied(device: Device) -> None:
    first = device.set("ON", 50, cmd_id="once-1")
    again = device.set("OFF", 9, cmd_id="once-1")  # same id, other fields: still the same command
    assert again.get("dup") is True and first.get("dup") is None
    for key in ("seq", "id", "src", "state", "brightness", "t_rx", "t_pin"):
        assert again.get(key) == first.get(key), key
    st = device.get()
    assert (st.get("seq"), st.get("state"), st.get("brightness")) == (first.get("seq"), "ON", 50)
    nxt = device.set("OFF")  # a new id is applied as usual, with the next sequence number
    assert nxt.get("seq") == first.get("seq") + 1 and nxt.get("dup") is None


def test_a_repeated_mqtt_command_is_acked_with_its_original_event_and_the_retained_state_stays(
    journey: Journeys, device: Device, mqtt: HostMqtt, broker: RunningBroker
) -> None:
    j1 = journey.via_mqtt("ON", 60, cmd_id="twice-1")
    j2 = journey.via_mqtt("OFF", cmd_id="twice-2")
    since = mqtt.log.cursor
    dup = journey.via_mqtt("ON", 60, cmd_id="twice-1")  # a retry of a command already done
    assert (dup.seq, dup.state, dup.brightness) == (j1.seq, "ON", 60)
    ack = mqtt.log.wait_for(lambda e: e.get("id") == "twice-1", TIMEOUT, "the ack of twice-1", since)
    assert ack.topic == journey.topic("ack") and ack.get("dup") is True and not ack.get("_retained")
    assert (ack.get("t_rx"), ack.get("t_pin")) == (j1.dev_t_rx, j1.dev_t_pin)
    # Nothing went to the state topic: the retained state is still the newest command's.
    assert not [e for e in mqtt.log.events(since) if e.topic == journey.topic("state")]
    late = HostMqtt(broker.info, "late").connect()
    try:
        late.subscribe(journey.topic("state"))
        st = late.log.wait_for(lambda e: True, TIMEOUT, "the retained state")
    finally:
        late.close()
    assert (st.get("id"), st.get("seq"), st.get("state")) == ("twice-2", j2.seq, "OFF")
    assert device.get().get("state") == "OFF"


def test_an_id_seen_on_the_serial_link_is_a_duplicate_over_mqtt_too(journey: Journeys, device: Device) -> None:
    ev = device.set("ON", 33, cmd_id="both-1")
    dup = journey.via_mqtt("OFF", cmd_id="both-1")
    assert (dup.seq, dup.state, dup.brightness, dup.src) == (ev.get("seq"), "ON", 33, "serial")
    assert device.get().get("state") == "ON"


def test_the_window_of_remembered_ids_is_bounded(device: Device) -> None:
    """The ring holds the last RECENT_IDS ids: an older one counts as new again."""
    first = device.set("ON", 1, cmd_id="win-0")
    for i in range(1, RECENT_IDS):
        device.set("ON", i + 1, cmd_id=f"win-{i}")
    assert device.set("OFF", cmd_id="win-1").get("dup") is True  # still remembered
    device.set("ON", 200, cmd_id=f"win-{RECENT_IDS}")  # pushes win-0 out
    again = device.set("OFF", cmd_id="win-0")
    assert again.get("dup") is None and again.get("seq") > first.get("seq")
    assert device.get().get("state") == "OFF"


def test_heap_holds_steady_under_300_commands_with_ids_in_the_default_heap(device: Device) -> None:
    first = device.fetch_info()
    for i in range(300):
        device.set("ON" if i % 2 else "OFF", i % 255 + 1)
        if i % 50 == 0:
            device.set("ON", cmd_id=f"h-{i}")  # a duplicate now and then: a repeat of...
            device.set("ON", cmd_id=f"h-{i}")  # ...an id just seen
    last = device.fetch_info()
    assert last["mem_alloc"] <= first["mem_alloc"] + 2048, (first["mem_alloc"], last["mem_alloc"])


# --------------------------------------------------------------------------
# QoS 1 and the persistent session
# --------------------------------------------------------------------------


class QosSubscriber:
    """A paho client that records each message's QoS (HostMqtt keeps payloads only)."""

    def __init__(self, info: BrokerInfo, topic: str, qos: int) -> None:
        self.got: list[tuple[str, int, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=IdMaker("lightctl-qos-")())
        if info.username is not None:
            self.client.username_pw_set(info.username, info.password)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.connect(info.host, info.port)
        self.client.loop_start()
        self.client.subscribe(topic, qos)
        if not self._subscribed.wait(TIMEOUT):
            raise WaitTimeout(f"no SUBACK for {topic} within {TIMEOUT} s")

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        try:
            data = json.loads(msg.payload)
        except ValueError:
            data = {"payload": msg.payload.decode("utf-8", "replace")}
        with self._lock:
            self.got.append((msg.topic, msg.qos, data if isinstance(data, dict) else {"payload": data}))

    def wait(self, pred: Any, what: str) -> tuple[str, int, dict[str, Any]]:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            with self._lock:
                for m in self.got:
                    if pred(m):
                        return m
            time.sleep(0.01)
        raise WaitTimeout(f"timed out after {TIMEOUT} s waiting for {what}; got {self.got}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.mark.needs_config
@pytest.mark.parametrize("qos", [None, 1, 0], ids=["default", "qos1", "qos0"])
def test_state_and_availability_go_out_at_the_configured_qos(
    device_factory: DeviceFactory, broker: RunningBroker, qos: int | None
) -> None:
    if qos != 1 and broker.kind == "amqtt":
        pytest.skip("amqtt delivers a QoS 0 publish at QoS 1")
    dev = device_factory(config={"mqtt": {} if qos is None else {"state_qos": qos}})
    dev.wait_mqtt()
    sub = QosSubscriber(broker.info, f"{dev.base}/#", 1)  # the broker forwards at min(publish, subscribe)
    try:
        _, q_avail, _ = sub.wait(lambda m: m[0].endswith("/availability"), "the availability")
        dev.set("ON", 5, cmd_id="qos-1")
        _, q_state, _ = sub.wait(lambda m: m[2].get("id") == "qos-1", "the state of qos-1")
    finally:
        sub.close()
    want = 0 if qos is None else qos  # reports at QoS 0 by default (see firmware/mqtt_link.py)
    assert (q_avail, q_state) == (want, want)


@pytest.fixture
def proxy(broker: RunningBroker) -> Iterator[FaultProxy]:
    with FaultProxy(*broker.info.address).start() as p:
        yield p


def _state_publishes(base: str) -> tuple[list[bytes], Any]:
    """A proxy rule that records (never drops) the device's state PUBLISHes."""
    seen: list[bytes] = []

    def record(packet: bytes) -> bool:
        if mqtt_publish_topic(packet) == f"{base}/state":
            seen.append(packet)
        return False

    return seen, record


def _is_state_of(base: str, cmd_id: str) -> Any:
    def match(packet: bytes) -> bool:
        payload = mqtt_publish_payload(packet)
        return mqtt_publish_topic(packet) == f"{base}/state" and payload is not None and cmd_id.encode() in payload

    return match


@pytest.mark.needs_config
def test_a_qos1_state_whose_puback_never_comes_is_sent_again_with_dup(
    device_factory: DeviceFactory, broker: RunningBroker, proxy: FaultProxy, mqtt: HostMqtt
) -> None:
    dev = device_factory(broker=proxy.info_for(broker.info), config={"mqtt": {"state_qos": 1}})
    dev.wait_mqtt()
    mqtt.subscribe(f"{dev.base}/state")
    seen, record = _state_publishes(dev.base)
    proxy.up.drop_next(record, 10**6)
    lost = proxy.up.drop_next(_is_state_of(dev.base, "lost-1"))  # the broker never sees it: no PUBACK
    since = mqtt.log.cursor
    dev.set("ON", 44, cmd_id="lost-1")  # applied at once; its MQTT report is lost on the way
    lost.wait(TIMEOUT)
    ev = mqtt.log.wait_for(lambda e: e.get("id") == "lost-1", RETRY_S + 10, "the state of lost-1, resent", since)
    assert (ev.get("state"), ev.get("brightness")) == ("ON", 44)
    mine = [p for p in seen if b"lost-1" in p]
    assert len(mine) >= 2 and not mine[0][0] & DUP and mine[1][0] & DUP
    assert mine[0][1:] == mine[1][1:]  # the same packet (same packet id), DUP set


@pytest.mark.needs_config
@pytest.mark.parametrize("state_qos", [0, 1], ids=["qos0_reports", "qos1_reports"])
def test_a_state_lost_with_the_link_is_sent_again_first_thing_after_a_reconnect(
    device_factory: DeviceFactory, broker: RunningBroker, proxy: FaultProxy, mqtt: HostMqtt, state_qos: int
) -> None:
    dev = device_factory(broker=proxy.info_for(broker.info), config={"mqtt": {"state_qos": state_qos}})
    dev.wait_mqtt()
    mqtt.subscribe(f"{dev.base}/state")
    seen, record = _state_publishes(dev.base)
    proxy.up.drop_next(record, 10**6)
    lost = proxy.up.drop_next(_is_state_of(dev.base, "cut-1"))
    since, dsince = mqtt.log.cursor, dev.log.cursor
    dev.set("ON", 45, cmd_id="cut-1")
    lost.wait(TIMEOUT)
    proxy.cut()
    dev.log.wait_for(lambda e: e.kind == "mqtt" and e.get("status") == "connected", 20, "MQTT back", dsince)
    ev = mqtt.log.wait_for(lambda e: e.get("id") == "cut-1", TIMEOUT, "the state of cut-1 after the reconnect", since)
    assert (ev.get("state"), ev.get("brightness")) == ("ON", 45)
    mine = [p for p in seen if b"cut-1" in p]
    if not state_qos:  # the original (dropped), then the current state published on connect
        assert len(mine) >= 2 and not any(p[0] & DUP for p in mine), mine
        return
    # the original (dropped), then the same packet with DUP before anything else of the new
    # connection, then the current state published again on connect
    assert len(mine) >= 3, mine
    assert not mine[0][0] & DUP and mine[1][0] & DUP and not mine[2][0] & DUP
    assert seen.index(mine[1]) < seen.index(mine[2])


@pytest.mark.needs_config
@pytest.mark.parametrize("clean", [False, True])
def test_a_command_sent_while_the_device_is_offline_arrives_after_it_reconnects(
    device_factory: DeviceFactory, broker: RunningBroker, proxy: FaultProxy, mqtt: HostMqtt, clean: bool
) -> None:
    """A persistent session (the default) keeps QoS 1 commands for the device; a
    clean session loses them."""
    if broker.kind == "amqtt" and not clean:
        pytest.skip("amqtt does not queue QoS 1 messages for an offline persistent session")
    dev = device_factory(broker=proxy.info_for(broker.info), config={"mqtt": {"clean_session": clean}})
    dev.wait_mqtt()
    js = Journeys(dev, mqtt)
    js.via_mqtt("OFF")  # subscribed; the device's session holds its subscription
    since, dsince = mqtt.log.cursor, dev.log.cursor
    proxy.cut(refuse=True)
    dev.log.wait_for(lambda e: e.kind == "mqtt" and e.get("status") == "disconnected", 10, "MQTT down", dsince)
    avail = js.topic("availability")
    mqtt.log.wait_for(
        lambda e: e.topic == avail and e.get("payload") == "offline",
        TIMEOUT,
        "the device's last will: the broker saw it go",
        since,
    )
    info = mqtt.client.publish(js.topic("set"), json.dumps({"id": "away-1", "state": "ON", "brightness": 66}), qos=1)
    # the broker's PUBACK: it has routed the command (queued it for the session, or dropped it)
    info.wait_for_publish(TIMEOUT)
    assert info.is_published(), "no PUBACK from the broker for command away-1"
    proxy.refuse = False
    dev.log.wait_for(lambda e: e.kind == "mqtt" and e.get("status") == "connected", 40, "MQTT back", dsince)
    js.via_mqtt("OFF", 1, cmd_id="after-1")  # queued messages are delivered on connect, before this one
    got = [e for e in mqtt.log.events(since) if e.topic == js.topic("state") and e.get("id") in ("away-1", "after-1")]
    changes = [e for e in dev.log.events(dsince) if e.kind == "change" and e.get("id") == "away-1"]
    if clean:
        assert not changes and [e.get("id") for e in got] == ["after-1"]
    else:
        assert len(changes) == 1 and (changes[0].get("state"), changes[0].get("brightness")) == ("ON", 66)
        assert [e.get("id") for e in got] == ["away-1", "after-1"]


# --------------------------------------------------------------------------
# the state restored after a power cut
# --------------------------------------------------------------------------


def _wait_file(path: Path, pred: Any, timeout: float, what: str) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = json.loads(path.read_text())
            if pred(last):
                return dict(last)
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    raise WaitTimeout(f"timed out after {timeout:g} s waiting for {what} in {path}; it holds {last!r}")


@pytest.mark.needs_config
@pytest.mark.needs_process
def test_restore_last_brings_the_light_back_after_a_power_cut(
    device_factory: DeviceFactory, mqtt: HostMqtt, tmp_path: Path
) -> None:
    opts: dict[str, Any] = {"device_id": f"rst-{IdMaker('')()}", "workdir": tmp_path, "config": {"restore": "last"}}
    dev = device_factory(**opts)
    dev.wait_mqtt()
    dev.set("ON", 77)
    _wait_file(tmp_path / "state.json", lambda d: d == {"state": "ON", "brightness": 77}, 15, "ON 77 on flash")
    assert dev.unix is not None
    dev.unix.kill()  # power cut: no goodbye
    mqtt.subscribe(f"{dev.base}/state")
    since = mqtt.log.cursor
    again = device_factory(**opts)
    boot = again.log.wait_for(lambda e: e.kind == "change", TIMEOUT, "the restored state on the console")
    assert (boot.get("seq"), boot.get("state"), boot.get("brightness"), boot.get("src")) == (1, "ON", 77, "restore")
    st = again.get()
    assert (st.get("seq"), st.get("state"), st.get("brightness")) == (1, "ON", 77)
    assert st.get("pin") == {"level": 1, "duty_u16": 77 * 257}
    again.wait_mqtt()
    ev = mqtt.log.wait_for(lambda e: e.get("src") == "restore", TIMEOUT, "the restored state on MQTT", since)
    assert (ev.get("seq"), ev.get("state"), ev.get("brightness")) == (1, "ON", 77)
    assert again.set("OFF").get("seq") == 2


@pytest.mark.needs_config
def test_the_state_file_is_written_a_while_after_a_change_and_only_when_it_changed(
    device_factory: DeviceFactory, tmp_path: Path
) -> None:
    dev = device_factory(workdir=tmp_path, config={"restore": "last", "state_delay_ms": 1500})
    f = tmp_path / "state.json"
    since = dev.log.cursor
    for b in range(1, 21):  # a burst of changes: one write, of the last state
        dev.set("ON", b)
    assert not f.exists()  # not on every change
    dev.log.wait_for(lambda e: e.kind == "persist", 10, "the state timer's write after the burst", since)
    assert json.loads(f.read_text()) == {"state": "ON", "brightness": 20}
    assert [e.get("status") for e in dev.log.events(since) if e.kind == "persist"] == ["saved"]
    written = f.stat().st_mtime_ns
    since = dev.log.cursor
    dev.set("ON", 20)  # the same state again: nothing to write
    ev = dev.log.wait_for(lambda e: e.kind == "persist", 10, "the state timer's check after the same state", since)
    assert ev.get("status") == "unchanged"
    assert f.stat().st_mtime_ns == written
    assert not (tmp_path / "state.json.tmp").exists()


@pytest.mark.needs_config
@pytest.mark.parametrize(
    ("restore", "saved", "want"),
    [
        ("off", {"state": "ON", "brightness": 90}, ("OFF", 255, 0)),
        ("on", None, ("ON", 255, 1)),
        ("on", {"state": "OFF", "brightness": 90}, ("ON", 90, 1)),
        ("last", {"state": "OFF", "brightness": 90}, ("OFF", 90, 1)),
        ("last", None, ("OFF", 255, 0)),
        ("last", "not json", ("OFF", 255, 0)),
    ],
)
def test_restore_modes_at_power_on(
    device_factory: DeviceFactory, tmp_path: Path, restore: str, saved: Any, want: tuple[str, int, int]
) -> None:
    if saved is not None:
        (tmp_path / "state.json").write_text(saved if isinstance(saved, str) else json.dumps(saved))
    dev = device_factory(workdir=tmp_path, config={"restore": restore})
    st = dev.get()
    assert (st.get("state"), st.get("brightness"), st.get("seq")) == want


# --------------------------------------------------------------------------
# Home Assistant MQTT discovery
# --------------------------------------------------------------------------


def test_home_assistant_discovery_describes_the_light_and_its_topics_work(
    device: Device, mqtt: HostMqtt, broker: RunningBroker
) -> None:
    device.wait_mqtt()
    topic = f"homeassistant/light/{device.device_id}/config"
    mqtt.subscribe(topic)
    cfg = mqtt.log.wait_for(lambda e: e.topic == topic, TIMEOUT, f"the retained discovery config on {topic}")
    assert cfg.get("_retained")
    assert cfg.get("schema") == "json" and cfg.get("brightness") is True and cfg.get("brightness_scale") == 255
    assert cfg.get("supported_color_modes") == ["brightness"]
    assert cfg.get("unique_id") and "name" in cfg.data
    assert cfg.get("command_topic") == f"{device.base}/set"
    assert cfg.get("state_topic") == f"{device.base}/state"
    assert cfg.get("availability_topic") == f"{device.base}/availability"
    dev_info = cfg.get("device")
    assert dev_info["identifiers"] and dev_info["name"] == device.device_id
    assert dev_info["model"] == device.board["name"] and dev_info["sw_version"] == device.info["version"]
    # The topics it names work, the way Home Assistant uses them (commands without an id).
    mqtt.subscribe(cfg.get("state_topic"))
    mqtt.subscribe(cfg.get("availability_topic"))
    mqtt.log.wait_for(
        lambda e: e.topic == cfg.get("availability_topic") and e.get("payload") == "online", TIMEOUT, "online"
    )
    since = mqtt.log.cursor
    mqtt.publish(cfg.get("command_topic"), json.dumps({"state": "ON", "brightness": 128}))
    st = mqtt.log.wait_for(lambda e: e.topic == cfg.get("state_topic"), TIMEOUT, "the state after an HA command", since)
    assert (st.get("state"), st.get("brightness")) == ("ON", 128)


@pytest.mark.needs_config
def test_discovery_prefix_is_configurable_and_discovery_can_be_turned_off(
    device_factory: DeviceFactory, mqtt: HostMqtt
) -> None:
    on = device_factory(config={"mqtt": {"discovery_prefix": "ha-test"}})
    off = device_factory(config={"mqtt": {"discovery": False}})
    on.wait_mqtt()
    off.wait_mqtt()
    mqtt.subscribe("ha-test/light/+/config")
    mqtt.subscribe(f"homeassistant/light/{off.device_id}/config")
    ev = mqtt.log.wait_for(lambda e: e.topic.startswith("ha-test/"), TIMEOUT, "the config under ha-test/")
    assert ev.topic == f"ha-test/light/{on.device_id}/config"
    # the disabled one: its state is there (retained) but never a config
    mqtt.subscribe(f"{off.base}/state")
    mqtt.log.wait_for(lambda e: e.topic == f"{off.base}/state", TIMEOUT, "the retained state of the other device")
    assert not [e for e in mqtt.log.events() if e.topic == f"homeassistant/light/{off.device_id}/config"]
