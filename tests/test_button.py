"""The physical button: local first, debounced, then reported."""

from __future__ import annotations

import pytest

from host_harness.dut.device import Device
from host_harness.measure.journeys import Journeys
from host_harness.pytest_plugin import DeviceFactory

pytestmark = pytest.mark.needs_sim_pin  # the simulated button is pressed over the serial link


def test_press_toggles_the_light_and_the_state_is_seen_on_mqtt(journey: Journeys, device: Device) -> None:
    journey.via_mqtt("OFF")
    j = journey.button()
    assert (j.src, j.state) == ("button", "ON")
    assert j.id.startswith("button-")
    assert 0 <= j.rx_to_pin_ms <= j.rx_to_tx_ms
    assert device.get().get("pin")["level"] == 1
    j2 = journey.button()
    assert (j2.state, j2.seq) == ("OFF", j.seq + 1)
    assert j2.id != j.id


def test_a_bouncing_press_toggles_exactly_once(device: Device) -> None:
    """The simulated press bounces three times on press and on release."""
    seq0 = device.get().get("seq")  # a board was used before this test
    presses0: int | None = None  # and counted presses before it
    for n in range(1, 4):
        since = device.log.cursor
        device.press()
        device.log.wait_for(lambda e: e.kind == "change" and e.get("src") == "button", 5, "the button change", since)
        # the release bounces too: a second toggle would come before the debouncer re-arms
        rel = device.log.wait_for(lambda e: e.kind == "released", 5, "the button's release (debouncer re-armed)", since)
        if presses0 is None:
            presses0 = int(rel.get("presses")) - 1
        assert rel.get("presses") == presses0 + n
        changes = [e for e in device.log.events(since) if e.kind == "change"]
        assert len(changes) == 1, changes
        assert device.get().get("seq") == seq0 + n


@pytest.mark.needs_config
def test_button_works_with_no_network_at_all(device_factory: DeviceFactory) -> None:
    """The light never waits for the network: no broker configured, still toggles."""
    dev = device_factory(broker=None)
    assert dev.fetch_info()["mqtt"] == "disabled"
    since = dev.log.cursor
    dev.press()
    ev = dev.log.wait_for(lambda e: e.kind == "change", 5, "a local button change", since)
    assert (ev.get("state"), ev.get("src")) == ("ON", "button")


@pytest.mark.needs_config
def test_button_works_while_the_broker_is_unreachable(device_factory: DeviceFactory) -> None:
    from host_harness.broker.info import BrokerInfo
    from host_harness.broker.running import free_port

    dead = BrokerInfo.local("external", free_port())  # nothing listens there
    dev = device_factory(broker=dead)
    since = dev.log.cursor
    dev.press()
    ev = dev.log.wait_for(lambda e: e.kind == "change", 5, "a local button change", since)
    assert ev.get("state") == "ON"
    assert dev.get().get("mqtt") == "disconnected"
