"""Physical confirmation: a sense input wired to the light's output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hoptruth import check_hops_against_truth

from host_harness.core.ticks import ticks_diff
from host_harness.dut import boards
from host_harness.dut.device import Device
from host_harness.link.mqtt_client import HostMqtt
from host_harness.measure.clocksync import SyncedClock, unix_clock_truth
from host_harness.measure.journeys import Journeys
from host_harness.measure.load import closed_loop
from host_harness.pytest_plugin import DeviceFactory, LightctlOptions


@pytest.fixture
def sense_device(lightctl: LightctlOptions, device_factory: DeviceFactory, tmp_path: Path) -> Device:
    """A device with a sense input: a board's own (its definition declares it), or on the
    Unix port a board definition whose simulated sense pin is wired to the simulated LED."""
    if boards.load(lightctl.board).get("sense"):
        return device_factory()
    b = boards.load("unix")
    b["sense"] = {"pin": "SENSE", "active_low": False}
    f = tmp_path / "unix-sense.json"
    f.write_text(json.dumps(b))
    return device_factory(board=str(f))


@pytest.mark.needs_sense
def test_the_event_carries_when_the_light_was_sensed(sense_device: Device) -> None:
    dev = sense_device
    period = int(dev.info["ticks_period"])
    for state in ("ON", "OFF", "ON"):
        ev = dev.set(state, 90)
        t_pin, t_sense, t_tx = ev.get("t_pin"), ev.get("t_sense"), ev.get("t_tx")
        assert isinstance(t_sense, int), ev.data
        assert 0 <= ticks_diff(t_sense, t_pin, period) <= ticks_diff(t_tx, t_pin, period)


@pytest.mark.needs_sense
@pytest.mark.needs_process  # the true clock is read from the Unix port's REPL
def test_the_sensed_hop_appears_in_the_waterfall_and_agrees_with_the_true_clock(
    sense_device: Device, mqtt: HostMqtt
) -> None:
    dev = sense_device
    dev.wait_mqtt()
    clock = SyncedClock(dev)
    run = closed_loop(Journeys(dev, mqtt), "mqtt", 10, clock)
    assert "device_sense" in run.hops_present()
    for ht in run.hop_times:
        assert ht.journey.dev_t_sense is not None
    check_hops_against_truth(run.hop_times, unix_clock_truth(dev), clock.model.error_bound_us)


def test_without_a_sense_input_there_is_no_sensed_hop(device_factory: DeviceFactory, lightctl: LightctlOptions) -> None:
    if boards.load(lightctl.board).get("sense"):
        pytest.skip(f"board {lightctl.board} has a sense input")
    dev = device_factory()
    ev = dev.set("ON")
    assert "t_sense" not in ev.data
