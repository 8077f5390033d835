"""Taps split the network hops at each broker: checked against the device's own clock and injected delays.

Real parts: the Unix-port device, Mosquitto (one, or a local one bridged to a
"cloud" one), the fault proxy on the link where a delay is injected. The
device's stamps are mapped with the Unix port's true clock, so the only
uncertainty left is the tap's own delivery, which the taps measure.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from host_harness.broker.bridge import BridgedBrokers
from host_harness.broker.info import BrokerInfo
from host_harness.broker.mosquitto import find_mosquitto
from host_harness.broker.running import RunningBroker
from host_harness.core.budgets import JourneyBudget, evaluate
from host_harness.core.clocktruth import UnixClockTruth
from host_harness.core.hops import LABELS
from host_harness.core.results import JourneyRun
from host_harness.dut.device import Device
from host_harness.link.mqtt_client import HostMqtt
from host_harness.measure.journeys import Journeys
from host_harness.measure.load import closed_loop
from host_harness.measure.tapcost import BLOCK, alternate
from host_harness.measure.taps import TapFloor, TapPoint, Taps
from host_harness.netfault.proxy import FaultProxy
from host_harness.pytest_plugin import DeviceFactory

pytestmark = pytest.mark.unix_only

INJECTED_S = 0.05  # one way, on one link
SLACK_MS = 5.0  # beyond a tap's measured delivery: a busy shared host's scheduling, not a timing claim


def client(info: BrokerInfo, name: str) -> HostMqtt:
    return HostMqtt(info, name)


@pytest.fixture
def taps_at(request: pytest.FixtureRequest) -> Iterator[list[Taps]]:
    made: list[Taps] = []
    yield made
    for t in made:
        t.close()


def tapped(points: list[TapPoint], made: list[Taps], dev: Device) -> tuple[Taps, list[TapFloor]]:
    taps = Taps(points, client).connect()
    made.append(taps)
    floors = taps.floor(20)
    taps.on(dev.base)
    return taps, floors


def uncertainty_ms(floors: list[TapFloor]) -> float:
    return max(f.max for f in floors) + SLACK_MS


def test_tapped_hops_agree_with_the_device_clock(
    broker: RunningBroker, device_factory: DeviceFactory, mqtt: HostMqtt, taps_at: list[Taps]
) -> None:
    dev = device_factory()
    dev.wait_mqtt()
    js = Journeys(dev, mqtt)
    js.taps, floors = tapped([TapPoint("broker", broker.info)], taps_at, dev)
    truth = UnixClockTruth()
    run = closed_loop(js, "mqtt", 24, truth)
    assert len(run.journeys) == 24, run.lost
    assert js.taps.missed == 0
    hops = run.hops_present()
    assert {"host_to_broker", "broker_to_device", "device_to_broker", "broker_to_host"} <= set(hops), hops
    assert "host_to_device" not in hops and "device_to_host" not in hops
    u = uncertainty_ms(floors)
    for ht in run.hop_times:
        j = ht.journey
        t_set, t_state = j.taps["broker"]
        assert t_set is not None and t_state is not None
        rx = truth.device_to_host_ns(j.dev_t_rx, j.t_confirm_ns)
        tx = truth.device_to_host_ns(j.dev_t_tx, j.t_confirm_ns)
        # Causal: the broker cannot forward a command before it was sent, nor a state before it was reported.
        assert t_set > j.t_send_ns and t_state > tx - 1000, (j.id, ht.hops)
        # The device receives what the broker forwarded: not before the tap saw it, less the tap's delivery.
        assert rx >= t_set - u * 1e6, (j.id, ht.hops, u)
        assert all(v >= -u for v in ht.hops.values()), (ht.hops, u)


def test_a_delay_between_broker_and_device_lands_in_broker_to_device(
    broker: RunningBroker, device_factory: DeviceFactory, mqtt: HostMqtt, taps_at: list[Taps]
) -> None:
    with FaultProxy(*broker.info.address).start() as proxy:
        dev = device_factory(broker=proxy.info_for(broker.info))
        dev.wait_mqtt()
        js = Journeys(dev, mqtt, timeout=10)
        js.taps, floors = tapped([TapPoint("broker", broker.info)], taps_at, dev)
        truth = UnixClockTruth()
        closed_loop(js, "mqtt", 4, truth)  # warm, undelayed
        proxy.down.delay_s = INJECTED_S  # broker -> device only
        run = closed_loop(js, "mqtt", 6, truth)
    assert len(run.journeys) == 6, run.lost
    injected_ms, u = INJECTED_S * 1000, uncertainty_ms(floors)
    for ht in run.hop_times:
        assert ht.hops["broker_to_device"] >= injected_ms - u, ht.hops
        assert ht.hops["host_to_broker"] < injected_ms / 2, ht.hops
    _blamed(run, "broker_to_device")


@pytest.mark.skipif(find_mosquitto() is None, reason="the bridged path needs mosquitto")
def test_a_delay_on_the_bridge_lands_in_cloud_to_local(device_factory: DeviceFactory, taps_at: list[Taps]) -> None:
    proxies: list[FaultProxy] = []

    def via(host: str, port: int) -> tuple[str, int]:
        proxies.append(FaultProxy(host, port).start())
        return "127.0.0.1", proxies[0].port

    path = BridgedBrokers(str(find_mosquitto()), via=via)
    try:
        path.start()
        host = HostMqtt(path.info, "test-cloud").connect()
        dev = device_factory(broker=path.device_info)
        dev.wait_mqtt()
        js = Journeys(dev, host, timeout=10)
        points = [TapPoint("cloud", path.info), TapPoint("local", path.device_info)]
        js.taps, floors = tapped(points, taps_at, dev)
        truth = UnixClockTruth()
        closed_loop(js, "mqtt", 4, truth)  # warm, undelayed
        proxies[0].down.delay_s = INJECTED_S  # cloud -> local: the bridge connects from the local broker
        run = closed_loop(js, "mqtt", 6, truth)
        host.close()
    finally:
        path.stop()
        for p in proxies:
            p.stop()
    assert len(run.journeys) == 6, run.lost
    hops = run.hops_present()
    assert [h for h in hops if h.endswith(("_cloud", "_local", "_device", "_host"))] == [
        "host_to_cloud",
        "cloud_to_local",
        "local_to_device",
        "device_to_local",
        "local_to_cloud",
        "cloud_to_host",
    ], hops
    injected_ms, u = INJECTED_S * 1000, uncertainty_ms(floors)
    for ht in run.hop_times:
        assert ht.hops["cloud_to_local"] >= injected_ms - u, ht.hops
        for quick in ("host_to_cloud", "local_to_device", "local_to_cloud"):
            assert ht.hops[quick] < injected_ms / 2, (quick, ht.hops)
    _blamed(run, "cloud_to_local")


def _blamed(run: JourneyRun, hop: str) -> None:
    v = evaluate(run, JourneyBudget(total={"p50": INJECTED_S * 1000 / 2}))
    assert not v.ok and [b.hop for b in v.blames] == [hop], v.waterfall
    marked = [line for line in v.waterfall.splitlines() if "of the end-to-end p50 tail" in line]
    assert len(marked) == 1 and marked[0].startswith(LABELS[hop]), v.waterfall


def test_taps_off_see_nothing_and_leave_journeys_unsplit(
    broker: RunningBroker, device_factory: DeviceFactory, mqtt: HostMqtt, taps_at: list[Taps]
) -> None:
    dev = device_factory()
    dev.wait_mqtt()
    js = Journeys(dev, mqtt)
    js.taps, _floors = tapped([TapPoint("broker", broker.info)], taps_at, dev)
    tap = js.taps.taps[0]
    run = JourneyRun("mqtt")
    baseline = alternate(js, js.taps, BLOCK, UnixClockTruth(), into=run)
    assert len(run.journeys) == BLOCK and len(baseline.journeys) == BLOCK
    assert all(j.taps for j in run.journeys) and not any(j.taps for j in baseline.journeys)
    assert "host_to_device" in baseline.hops_present() and "host_to_broker" not in baseline.hops_present()
    untapped_ids = {j.id for j in baseline.journeys}
    # A retained state replayed when a tap subscribes again comes from the broker's store, not the device.
    seen_ids = {e.get("id") for e in tap.client.log.events() if e.topic.startswith(dev.base) and not e.get("_retained")}
    assert not (seen_ids & untapped_ids), "an unsubscribed tap still received the device's messages"


def test_bridge_with_a_broker_url_is_refused_clearly() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "host_harness", "run", "--bridge", "--broker", "mqtt://127.0.0.1:1883"],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --bridge") and "--broker mqtt://" in lines[0], r.stderr
