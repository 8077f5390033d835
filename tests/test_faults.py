"""Charge once, confirm reliably: fault scenarios, every command counted.

Real broker, real interpreter, real sockets; a fault proxy in between. Each
scenario asserts none lost and none duplicated, and prints its row of the
scenario table (benchmarks/faults.py prints the whole table, with more commands).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from host_harness.broker.running import RunningBroker
from host_harness.broker.start import start_broker
from host_harness.dut.device import Device
from host_harness.netfault import scenarios as faults
from host_harness.netfault.proxy import FaultProxy
from host_harness.netfault.scenarios import ScenarioResult
from host_harness.pytest_plugin import DeviceFactory

pytestmark = [pytest.mark.needs_config, pytest.mark.needs_process]  # own broker, kills the device

KEEPALIVE = 4  # s: the device notices a dead link within 1.5 keepalives


@pytest.fixture
def own_broker(broker: RunningBroker) -> Iterator[RunningBroker]:
    if not broker.info.embedded:
        pytest.skip("these scenarios restart the broker: they need one started by the harness")
    b = start_broker(prefer=broker.kind)
    yield b
    b.stop()


@pytest.fixture
def proxy(own_broker: RunningBroker) -> Iterator[FaultProxy]:
    p = FaultProxy(own_broker.info.host, own_broker.info.port).start()
    yield p
    p.stop()


@pytest.fixture
def make_device(own_broker: RunningBroker, proxy: FaultProxy, device_factory: DeviceFactory) -> faults.MakeDevice:
    def make(**kw: object) -> Device:
        d = device_factory(broker=proxy.info_for(own_broker.info), keepalive=KEEPALIVE, **kw)
        d.wait_mqtt()
        return d

    return make


def _check(res: ScenarioResult) -> None:
    print("\n" + faults.table([res]))
    assert res.lost == 0, res.as_dict()
    assert res.duplicated == 0, res.as_dict()
    assert res.applied_once == res.sent


def test_lost_confirmation_is_retried_and_applied_once(
    own_broker: RunningBroker, make_device: faults.MakeDevice
) -> None:
    res = faults.lost_confirmation(own_broker, make_device, count=5)
    victim = res.notes[0].split()[-1]
    assert {o.cmd_id: o.attempts for o in res.outcomes}[victim] == 2  # its first confirmation was dropped
    assert res.acks == [victim]  # the retry was answered with the original event, not applied again
    _check(res)


def test_broker_restart_mid_run(own_broker: RunningBroker, make_device: faults.MakeDevice) -> None:
    res = faults.broker_restart(own_broker, make_device, count=10)
    assert res.recovery_s is not None
    _check(res)


def test_partition_of_ten_seconds_then_healed(
    own_broker: RunningBroker, proxy: FaultProxy, make_device: faults.MakeDevice
) -> None:
    res = faults.partition(own_broker, proxy, make_device, count=6, seconds=10.0)
    assert res.recovery_s is not None
    _check(res)


def test_device_killed_and_restarted_mid_command(
    own_broker: RunningBroker, proxy: FaultProxy, make_device: faults.MakeDevice
) -> None:
    res = faults.device_killed(own_broker, proxy, make_device, count=4)
    assert res.notes[-1] == "state after restart ON 42"
    _check(res)


def test_slow_link_500_ms_each_way(
    own_broker: RunningBroker, proxy: FaultProxy, make_device: faults.MakeDevice
) -> None:
    res = faults.slow_link(own_broker, proxy, make_device, count=5, delay_s=0.5)
    for o in res.outcomes:
        assert o.t_confirmed is not None and o.t_confirmed - o.t_first_send >= 0.9  # two delayed hops
    _check(res)
