"""Several devices in one test: one host MQTT client, one light or a group addressed at once."""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path

import pytest
from cli_runner import run_cli

from host_harness.broker.running import RunningBroker
from host_harness.core.events import Event, WaitTimeout
from host_harness.dut.fleet import start_unix_devices
from host_harness.measure.fleet import Fleet, group_topic


def _state(fleet: Fleet, i: int, pred, what: str, since: int) -> Event:
    d = fleet[i]
    t = f"{d.base}/state"
    return fleet.mqtt.serve(d.device_id).wait_for(
        lambda e: e.topic == t and not e.get("_retained") and pred(e), fleet.timeout, f"{d.device_id}: {what}", since
    )


@pytest.mark.devices(3)
@pytest.mark.parametrize("via", ["each", "group"])
def test_a_group_command_reaches_every_light_once(devices: Fleet, via: str) -> None:
    group = devices.group()
    gj = group.set("ON", 77, via=via)
    assert not gj.missing and not gj.dup
    assert sorted(gj.pin_ns) == sorted(d.device_id for d in devices)
    assert 0 <= gj.first_on_ms <= gj.all_on_ms <= gj.all_confirmed_ms
    assert gj.spread_ms == pytest.approx(gj.all_on_ms - gj.first_on_ms)
    for d in devices:
        st = d.get()
        assert (st.get("state"), st.get("brightness"), st.get("seq")) == ("ON", 77, 1)
    # The same command delivered again (a broker's redelivery, a retry): every
    # light answers it as a repeat and applies nothing.
    again = group.set("ON", 77, via=via, cmd_id=gj.id)
    assert not again.missing
    assert sorted(again.dup) == sorted(d.device_id for d in devices)
    assert {k: len(v) for k, v in group.reports(gj.id).items()} == {d.device_id: 1 for d in devices}
    assert all(e.get("dup") is True for evs in group.reports(gj.id, "ack").values() for e in evs)


@pytest.mark.devices(3)
def test_a_group_command_leaves_lights_outside_the_group_alone(devices: Fleet) -> None:
    devices.group(devices.devices[:2]).set("ON", via="each")
    gj = devices.group(devices.devices[:2]).set("OFF", via="each")
    assert not gj.missing
    assert devices[2].get().get("seq") == 0  # never commanded: still the boot state
    assert [devices[i].get().get("state") for i in range(2)] == ["OFF", "OFF"]


def test_one_device_is_addressed_alone(devices: Fleet) -> None:
    j = devices.journey(1).via_mqtt("ON", 9)
    assert (j.state, j.brightness) == ("ON", 9)
    assert devices[0].get().get("state") == "OFF"
    assert devices[1].get().get("seq") == 1


def test_a_group_topic_without_an_id_is_applied_once_per_light(devices: Fleet) -> None:
    since = {i: devices.mqtt.serve(d.device_id).cursor for i, d in enumerate(devices)}
    devices.mqtt.publish(group_topic(devices.base_topic, str(devices.group_name)), json.dumps({"state": "ON"}))
    evs = [
        _state(devices, i, lambda e: e.get("state") == "ON", "the state for an id-less group command", since[i])
        for i in range(len(devices))
    ]
    ids = [str(e.get("id")) for e in evs]
    assert all(i.startswith("mqtt-") for i in ids) and len(set(ids)) == len(ids)  # each light made its own


@pytest.mark.unix_only  # the truth is the Unix port's clock
@pytest.mark.devices(3)
def test_first_on_all_on_and_spread_match_the_true_clocks(devices: Fleet) -> None:
    truths = devices.truths()
    assert len(truths) == len(devices)
    unc_us = max(devices.clock(d).model.uncertainty_us for d in devices)
    for n, via in enumerate(["each", "group"] * 5):
        gj = devices.group().set("ON" if n % 2 else "OFF", via=via)
        assert not gj.missing
        true_pin = {k: truths[k].device_to_host_ns(t) for k, t in gj.pin_ticks.items()}
        true_spread_ms = (max(true_pin.values()) - min(true_pin.values())) / 1e6
        true_first_ms = (min(true_pin.values()) - gj.t_send_ns) / 1e6
        # Two clocks' errors at most (each within its sync's uncertainty), plus the 1 µs ticks truncation.
        slack_ms = (2 * unc_us + 2) / 1000
        assert gj.spread_ms == pytest.approx(true_spread_ms, abs=slack_ms), (gj.as_dict(), unc_us)
        assert gj.first_on_ms == pytest.approx(true_first_ms, abs=slack_ms)
        assert 0 < true_first_ms <= gj.all_on_ms + slack_ms


@pytest.mark.unix_only  # the simulated button is pressed over the serial link
def test_one_lights_button_drives_another_through_mqtt(devices: Fleet) -> None:
    a, b = devices[0], devices[1]
    devices.follow(a, b)
    for expected in ("ON", "OFF"):
        since_a = devices.mqtt.serve(a.device_id).cursor
        since_b = devices.mqtt.serve(b.device_id).cursor
        a.press()
        ev_a = _state(devices, 0, lambda e: e.get("src") == "button", "the button's state", since_a)
        assert ev_a.get("state") == expected
        follow_id = f"follow-{ev_a.get('id')}"
        ev_b = _state(devices, 1, lambda e, f=follow_id: e.get("id") == f, f"the follower's state {follow_id}", since_b)
        assert (ev_b.get("state"), ev_b.get("src")) == (expected, "mqtt")
        # B's light came on after A's button edge, on the host clock.
        edge = devices.clock(a).device_to_host_ns(int(ev_a.get("t_rx")), ev_a.host_ns)
        pin_b = devices.clock(b).device_to_host_ns(int(ev_b.get("t_pin")), ev_b.host_ns)
        assert edge < pin_b


@pytest.mark.devices(3)
def test_every_device_in_closed_loop_at_once_on_one_client(devices: Fleet) -> None:
    run = devices.closed_loop_all(15)
    assert not run.lost
    assert len(run.journeys) == 45
    assert len({j.id for j in run.journeys}) == 45
    for d in devices:
        assert d.get().get("seq") == 15


def _lightctl(*args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, timeout=180)


@pytest.mark.unix_only
def test_run_devices_prints_first_on_all_on_and_spread_per_mode(tmp_path: Path, broker: RunningBroker) -> None:
    out = tmp_path / "fleet.json"
    r = _lightctl(
        "run", "--no-budget", "--devices", "3", "--count", "10", "--broker", broker.info.url, "--json", str(out)
    )
    assert r.returncode == 0, r.stdout + r.stderr
    for mode in ("each", "group"):
        for label in ("first light on", "all lights on", "spread (all - first)"):
            assert f"{mode}: {label}" in r.stdout, r.stdout
    assert "one MQTT client for all 3 devices" in r.stdout
    assert "verdict: PASS" in r.stdout
    data = json.loads(out.read_text())
    for mode in ("each", "group"):
        js = data["groups"][mode]
        assert len(js) == 10 and not any(j["missing"] for j in js)
        assert all(j["first_on_ms"] <= j["all_on_ms"] for j in js)


def test_run_devices_below_one_is_a_usage_error() -> None:
    r = _lightctl("run", "--devices", "0")
    assert r.returncode == 2
    assert r.stderr.strip() == "error: --devices 0: need at least 1"


@pytest.mark.unix_only
@pytest.mark.devices(3)
def test_one_thread_reads_every_console(devices: Fleet) -> None:
    names = [t.name for t in threading.enumerate()]
    assert names.count("console-mux") == 1, names
    assert not [n for n in names if n.startswith("serial-reader")], names
    gone = devices[2]
    assert gone.unix is not None
    gone.unix.kill()
    with pytest.raises(WaitTimeout, match="closed"):
        gone.log.wait_for(lambda e: False, 5, "the console of a killed device to close", gone.log.cursor)
    assert devices[0].get().get("seq") == 0  # the others are still read
    assert devices.journey(1).via_mqtt("ON").state == "ON"


@pytest.mark.unix_only
def test_the_console_thread_ends_with_the_last_device(broker: RunningBroker) -> None:
    devs = start_unix_devices(2, broker.info, progress=False)
    mux = [t for t in threading.enumerate() if t.name == "console-mux"]
    assert len(mux) == 1
    for d in devs:
        d.close()
    mux[0].join(5)
    assert not mux[0].is_alive()
