"""Reproduce the 11-second light: inject latency on one hop, see it blamed.

A delaying TCP proxy sits between the device and the broker. An injected 3 s
on the broker -> device direction must land in the host_to_device hop of the
waterfall (within 5 %), and a broken budget must point at that hop.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hoptruth import check_hops_against_truth

from host_harness.broker.running import RunningBroker
from host_harness.core.budgets import JourneyBudget, evaluate
from host_harness.link.mqtt_client import HostMqtt
from host_harness.measure.clocksync import SyncedClock, unix_clock_truth
from host_harness.measure.journeys import Journeys
from host_harness.measure.load import closed_loop
from host_harness.netfault.proxy import FaultProxy
from host_harness.pytest_plugin import DeviceFactory

# the device reaches its broker through a fault proxy; its clock is the host's (Unix port)
pytestmark = [pytest.mark.needs_config, pytest.mark.needs_process]

INJECTED_S = 3.0


@pytest.fixture
def proxy(broker: RunningBroker) -> Iterator[FaultProxy]:
    p = FaultProxy(broker.info.host, broker.info.port).start()
    yield p
    p.stop()


def test_injected_three_seconds_are_attributed_to_that_hop(
    proxy: FaultProxy, broker: RunningBroker, device_factory: DeviceFactory, mqtt: HostMqtt
) -> None:
    dev = device_factory(broker=proxy.info_for(broker.info))
    dev.wait_mqtt()
    js = Journeys(dev, mqtt, timeout=INJECTED_S + 10)
    clock = SyncedClock(dev)
    closed_loop(js, "mqtt", 3, clock)  # warm, undelayed
    proxy.down.delay_s = INJECTED_S  # broker -> device only
    run = closed_loop(js, "mqtt", 2, clock)
    assert len(run.journeys) == 2, run.lost
    for ht in run.hop_times:
        injected_ms = INJECTED_S * 1000
        assert abs(ht.hops["host_to_device"] - injected_ms) <= 0.05 * injected_ms, ht.hops
        assert ht.hops["device_to_host"] < 0.05 * injected_ms, ht.hops
        assert ht.hops["device_apply"] + ht.hops["device_report"] < 0.05 * injected_ms, ht.hops
    check_hops_against_truth(run.hop_times, unix_clock_truth(dev), clock.model.error_bound_us)
    v = evaluate(run, JourneyBudget(total={"p99": 1000.0}))
    assert not v.ok
    marked = [line for line in v.waterfall.splitlines() if "of the end-to-end p99 tail" in line]
    assert len(marked) == 1 and marked[0].startswith("host sent -> device received"), v.waterfall
    assert "host_to_device covers: host client, broker" in v.waterfall
