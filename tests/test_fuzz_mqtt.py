"""Hostile input on MQTT, property-based: the real interpreter and broker against generated input.

As tests/test_fuzz_serial.py, on ``<base>/set`` and ``<base>/ping``: each
payload gets exactly one answer (matched by a barrier payload on the same
topic), the console reports the same, and the light follows the model. Over
MQTT byte 0x03 is an ordinary byte and is sent.
"""

from __future__ import annotations

import pytest
from fuzz.drivers import MqttFuzzer, report, run
from fuzz.oracle import mp_json
from fuzz.strategies import FUZZ, encoded, mqtt_commands, mqtt_garbage
from hypothesis import given
from hypothesis import strategies as st

from host_harness.link.mqtt_client import HostMqtt
from host_harness.pytest_plugin import DeviceFactory, LightctlOptions


@pytest.mark.needs_process  # a fresh device: its ids (made unique per test) were never seen
def test_mqtt_commands_are_applied_or_refused_as_specified(
    device_factory: DeviceFactory,
    mqtt: HostMqtt,
    lightctl: LightctlOptions,
    request: pytest.FixtureRequest,
) -> None:
    dev = device_factory()
    dev.wait_mqtt()
    f = MqttFuzzer(dev, mqtt, mp_json(lightctl.micropython))

    @FUZZ
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        leaf = data.draw(st.sampled_from(["set", "set", "set", "ping"]), "topic")
        obj = f.unique(data.draw(mqtt_commands(), "command"))
        f.send(leaf, data.draw(encoded(obj), "payload"))

    run(check, f)
    report(request, f)


def test_mqtt_garbage_is_refused_and_changes_nothing(
    device_factory: DeviceFactory,
    mqtt: HostMqtt,
    lightctl: LightctlOptions,
    request: pytest.FixtureRequest,
) -> None:
    dev = device_factory()
    dev.wait_mqtt()
    f = MqttFuzzer(dev, mqtt, mp_json(lightctl.micropython))

    @FUZZ
    @given(leaf=st.sampled_from(["set", "set", "ping"]), payload=mqtt_garbage())
    def check(leaf: str, payload: bytes) -> None:
        f.send(leaf, payload)

    run(check, f)
    report(request, f)
