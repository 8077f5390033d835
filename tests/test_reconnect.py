"""Broker gone and back: the device reconnects and publishes its state again."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from host_harness.broker.running import RunningBroker
from host_harness.broker.start import start_broker
from host_harness.link.mqtt_client import HostMqtt
from host_harness.measure.journeys import Journeys
from host_harness.pytest_plugin import DeviceFactory, LightctlOptions

pytestmark = [pytest.mark.needs_config, pytest.mark.needs_process]  # its own broker, restarted


@pytest.fixture
def own_broker(broker: RunningBroker, lightctl: LightctlOptions) -> Iterator[RunningBroker]:
    """A broker of the session's kind that this test may restart."""
    if not broker.info.embedded:
        pytest.skip("restarting needs a broker started by the harness (not --lightctl-broker URL)")
    b = start_broker(prefer=broker.kind)
    yield b
    b.stop()


def test_device_reconnects_after_broker_restart_and_republishes_state(
    own_broker: RunningBroker, device_factory: DeviceFactory
) -> None:
    dev = device_factory(broker=own_broker.info)
    dev.wait_mqtt()
    mq = HostMqtt(own_broker.info, "r1").connect()
    js = Journeys(dev, mq)
    j = js.via_mqtt("ON", 123)
    mq.close()
    since = dev.log.cursor
    own_broker.restart()  # retained messages are gone with it (no persistence)
    dev.log.wait_for(lambda e: e.kind == "mqtt" and e.get("status") == "disconnected", 10, "MQTT down", since)
    dev.log.wait_for(lambda e: e.kind == "mqtt" and e.get("status") == "connected", 20, "MQTT back", since)
    mq2 = HostMqtt(own_broker.info, "r2").connect()
    try:
        mq2.subscribe(f"{dev.base}/#")
        st = mq2.log.wait_for(lambda e: e.topic.endswith("/state"), 5, "the re-published retained state")
        av = mq2.log.wait_for(lambda e: e.topic.endswith("/availability"), 5, "availability after reconnect")
        assert (st.get("seq"), st.get("state"), st.get("brightness")) == (j.seq, "ON", 123)
        assert av.get("payload") == "online"
        j2 = Journeys(dev, mq2).via_mqtt("OFF")
        assert j2.seq == j.seq + 1
    finally:
        mq2.close()
