"""MQTT journeys end to end: real interpreter, real broker, real sockets."""

from __future__ import annotations

import json

import pytest

from host_harness.broker.running import RunningBroker
from host_harness.core.events import WaitTimeout
from host_harness.dut.device import CommandError, Device
from host_harness.link.mqtt_client import HostMqtt
from host_harness.measure.journeys import Journeys
from host_harness.pytest_plugin import DeviceFactory

BUDGET_MS = 1000.0  # generous: catches regressions of orders of magnitude, not noise


def test_mqtt_journey_is_confirmed_with_its_own_id_and_device_timestamps(journey: Journeys) -> None:
    j = journey.via_mqtt("ON", 200)
    assert (j.state, j.brightness, j.src) == ("ON", 200, "mqtt")
    assert 0 < j.e2e_ms < BUDGET_MS
    assert 0 <= j.rx_to_pin_ms <= j.rx_to_tx_ms < BUDGET_MS


def test_many_journeys_alternate_and_every_one_is_confirmed(journey: Journeys) -> None:
    seqs = []
    for i in range(40):
        j = journey.via_mqtt("ON" if i % 2 else "OFF", (i * 37) % 255 + 1)
        seqs.append(j.seq)
    assert seqs == list(range(seqs[0], seqs[0] + 40))


def test_the_change_also_appears_on_the_serial_console(journey: Journeys, device: Device) -> None:
    j = journey.via_mqtt("ON", 3)
    ev = device.log.wait_for(lambda e: e.kind == "change" and e.get("id") == j.id, 5, f"serial change {j.id}")
    assert ev.get("src") == "mqtt" and ev.get("seq") == j.seq


def test_state_is_retained_and_availability_online(journey: Journeys, device: Device, broker: RunningBroker) -> None:
    j = journey.via_mqtt("ON", 99)
    late = HostMqtt(broker.info, "late").connect()
    try:
        late.subscribe(f"{device.base}/#")
        st = late.log.wait_for(lambda e: e.topic.endswith("/state"), 5, "retained state")
        av = late.log.wait_for(lambda e: e.topic.endswith("/availability"), 5, "retained availability")
    finally:
        late.close()
    assert st.get("_retained") and st.get("id") == j.id and st.get("seq") == j.seq
    assert (st.get("state"), st.get("brightness")) == ("ON", 99)
    assert av.get("payload") == "online" and av.get("_retained")


@pytest.mark.needs_process
def test_last_will_says_offline_when_the_device_dies(journey: Journeys, device: Device, mqtt: HostMqtt) -> None:
    journey.via_mqtt("ON")
    since = mqtt.log.cursor
    assert device.unix is not None
    device.unix.kill()
    ev = mqtt.log.wait_for(
        lambda e: e.topic == journey.topic("availability") and e.get("payload") == "offline",
        10,
        "the last will 'offline'",
        since,
    )
    assert not ev.get("_retained")  # delivered live to the subscriber


def test_home_assistant_command_without_id_gets_a_generated_id(journey: Journeys, mqtt: HostMqtt) -> None:
    journey.via_mqtt("OFF")
    since = mqtt.log.cursor
    mqtt.publish(journey.topic("set"), '{"state": "ON", "brightness": 128}')
    ev = mqtt.log.wait_for(lambda e: e.topic == journey.topic("state"), 5, "state after an id-less command", since)
    assert ev.get("id", "").startswith("mqtt-")
    assert (ev.get("state"), ev.get("brightness"), ev.get("src")) == ("ON", 128, "mqtt")


BAD_PAYLOADS: list[tuple[bytes, str]] = [
    (b"{oops", "bad_json"),
    (b"42", "bad_json"),
    (b'{"state":"DIM","id":"e1"}', "bad_state"),
    (b'{"brightness":"7","id":"e2"}', "bad_brightness"),
    (b'{"brightness":999,"id":"e3"}', "bad_brightness"),
    (b'{"state":"ON","effect":"rainbow","id":"e4"}', "unknown_field"),
    (b'{"id":"e5"}', "empty_command"),
    (b'{"state":"ON","id":7}', "bad_id"),
    (b"\xc3\x28\xa0\xa1", "bad_utf8"),
    (b'{"state":"ON","x":"' + b"y" * 700 + b'"}', "too_long"),
    (b'{"state":"ON","x":"' + b"y" * 5000 + b'"}', "too_long"),
    (b"", "bad_json"),
]


@pytest.mark.parametrize(("payload", "code"), BAD_PAYLOADS, ids=[c for _, c in BAD_PAYLOADS])
def test_bad_command_gets_an_error_report_and_changes_nothing(
    journey: Journeys, mqtt: HostMqtt, device: Device, payload: bytes, code: str
) -> None:
    before = journey.via_mqtt("ON", 50)
    since = mqtt.log.cursor
    mqtt.publish(journey.topic("set"), payload)
    err = mqtt.log.wait_for(lambda e: e.topic == journey.topic("error"), 5, f"error report for {payload[:30]!r}", since)
    assert err.get("code") == code
    assert not [e for e in mqtt.log.events(since) if e.topic == journey.topic("state")]
    st = device.get()
    assert (st.get("seq"), st.get("state"), st.get("brightness")) == (before.seq, "ON", 50)
    after = journey.via_mqtt("OFF")  # still obeys valid commands
    assert after.seq == before.seq + 1


def test_error_report_carries_the_command_id(journey: Journeys) -> None:
    with pytest.raises(CommandError) as e:
        journey.via_mqtt("PURPLE", cmd_id="bad-1")
    assert e.value.event.get("id") == "bad-1" and e.value.event.get("code") == "bad_state"


def test_only_its_own_command_topic_is_obeyed(journey: Journeys, mqtt: HostMqtt, device: Device) -> None:
    before = journey.via_mqtt("OFF")
    base = journey.topic("")[:-1]
    others = [base.rsplit("/", 1)[0] + "/other-light/set", base + "/set/extra", base + "/SET", "lightctl/+/set"]
    for t in others[:3]:
        mqtt.publish(t, json.dumps({"state": "ON", "id": "not-for-me"}))
    journey.via_mqtt(brightness=before.brightness)  # a barrier: later than the others
    hist = [e for e in device.log.events() if e.kind == "change" and e.get("id") == "not-for-me"]
    assert hist == []


@pytest.mark.needs_config  # two more devices of its own ids
def test_a_retained_command_is_not_applied(
    journey: Journeys, mqtt: HostMqtt, device_factory: DeviceFactory, broker: RunningBroker
) -> None:
    """A retained command would re-apply on every reconnect: it is refused."""
    dev2 = device_factory(device_id=f"{journey.device.device_id}-r")
    dev2.wait_mqtt()
    set_t = f"{dev2.base}/set"
    try:
        since = mqtt.log.cursor
        mqtt.subscribe(f"{dev2.base}/error")
        mqtt.publish(set_t, '{"state":"ON","id":"ret-1"}', retain=True)
        # live delivery is not retained: applied once
        ev = dev2.log.wait_for(lambda e: e.get("id") == "ret-1", 5, "live retained-flag command")
        assert ev.kind == "change"
        dev3 = device_factory(device_id=dev2.device_id)  # same topics, reconnecting later
        dev3.wait_mqtt()
        err = mqtt.log.wait_for(
            lambda e: e.topic == f"{dev2.base}/error" and e.get("code") == "retained_command",
            10,
            "retained_command error from the late device",
            since,
        )
        assert err.get("id") == "ret-1"
        assert not [e for e in dev3.log.events() if e.kind == "change"]
    finally:
        mqtt.publish(set_t, b"", retain=True)  # clear the retained command


@pytest.mark.needs_process
def test_a_confirmation_that_never_comes_is_a_timeout_naming_the_command(journey: Journeys, device: Device) -> None:
    journey.via_mqtt("ON")
    assert device.unix is not None
    device.unix.kill()
    with pytest.raises(WaitTimeout, match=r"state confirmation of command 'ghost-1' on .*/state"):
        journey.via_mqtt("OFF", cmd_id="ghost-1", timeout=0.5)
