"""Clock sync: device ticks mapped onto the host's monotonic clock.

On the Unix port the device reads the host's own CLOCK_MONOTONIC (shifted
by a known offset when the board emulates a short ticks period), so every
estimate can be checked against the truth: within the error bound the sync
reports and within the targets (100 µs over serial, 250 µs over MQTT). The
measured errors are printed (pytest -s) and tabled by benchmarks/clock_sync.py.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from hoptruth import MQTT_SYNC_TARGET_US, ROUNDING_US, SERIAL_SYNC_TARGET_US

from host_harness.dut import boards
from host_harness.dut.device import Device
from host_harness.link.mqtt_client import HostMqtt
from host_harness.measure.clocksync import ClockSync, sync_mqtt, sync_serial, unix_clock_truth
from host_harness.measure.journeys import Journeys
from host_harness.pytest_plugin import DeviceFactory

SHORT_PERIOD = 2**20  # 1.05 s
TRUTH_HEAPSIZE = "256k"


# -- against the truth on the Unix port ---------------------------------------


def _short_period_device(tmp_path: Path, device_factory: DeviceFactory, start: int) -> Device:
    b = boards.load("unix")
    b["ticks"] = {"period": SHORT_PERIOD, "start": start}
    bf = tmp_path / "unix-short-ticks.json"
    bf.write_text(json.dumps(b))
    # The emulated offset is read from the REPL after Ctrl-C (unix_clock_truth), which needs
    # heap to spare beyond the firmware's own (default) heap (tested elsewhere).
    dev = device_factory(board=str(bf), heapsize=TRUTH_HEAPSIZE)
    assert dev.info["ticks_period"] == SHORT_PERIOD
    return dev


def test_synced_device_stamps_land_inside_their_journeys(device: Device, mqtt: HostMqtt, journey: Journeys) -> None:
    """Any device: the stamps of a light journey, mapped to host time, fall inside the journey."""
    for sync in (sync_serial(device, n=100), sync_mqtt(device, mqtt, n=100)):
        m = sync.fit()
        bound_ns = (m.error_bound_us + ROUNDING_US) * 1000
        for i in range(5):
            for j in (journey.via_serial("ON", i + 1), journey.via_mqtt("OFF", i + 1)):
                for name, raw in (("t_rx", j.dev_t_rx), ("t_pin", j.dev_t_pin), ("t_tx", j.dev_t_tx)):
                    t = m.device_to_host_ns(raw, near_host_ns=j.t_confirm_ns)
                    assert j.t_send_ns - bound_ns <= t <= j.t_confirm_ns + bound_ns, (
                        sync.samples[0].via,
                        j.kind,
                        name,
                        (t - j.t_send_ns) / 1e6,
                        j.e2e_ms,
                    )
        assert 0 <= m.host_to_device_ticks(time.monotonic_ns()) < m.period


@pytest.mark.needs_process  # the true offset is read from the process's REPL
def test_serial_sync_matches_the_true_offset(device: Device) -> None:
    sync = sync_serial(device, n=200)
    m = sync.fit()
    truth = unix_clock_truth(device)
    err = truth.offset_error_us(m)
    print(f"\nserial sync, n={m.n}: offset error {err:+.1f} µs, rtt min {m.rtt_min_us:.0f} µs, {m}")
    assert abs(err) <= m.error_bound_us + ROUNDING_US, m
    assert abs(err) <= SERIAL_SYNC_TARGET_US, m
    # the mapping agrees: every pong's stamp maps to the host time the truth gives
    for s in sync.samples:
        raw = s.dev_ticks_us % m.period
        got_ns = m.device_to_host_ns(raw, s.t_recv_ns)
        assert abs(got_ns - truth.device_to_host_ns(raw, s.t_recv_ns)) <= (m.error_bound_us + ROUNDING_US) * 1000


@pytest.mark.needs_process  # the true offset is read from the process's REPL
def test_mqtt_sync_matches_the_true_offset(device: Device, mqtt: HostMqtt) -> None:
    device.wait_mqtt()
    sync = sync_mqtt(device, mqtt, n=200)
    m = sync.fit()
    assert all(s.via == "mqtt" for s in sync.samples) and m.n >= 160  # a few may be lost at QoS 0
    truth = unix_clock_truth(device)
    err = truth.offset_error_us(m)
    print(f"\nMQTT sync, n={m.n}: offset error {err:+.1f} µs, rtt min {m.rtt_min_us:.0f} µs, {m}")
    assert abs(err) <= m.error_bound_us + ROUNDING_US, m
    assert abs(err) <= MQTT_SYNC_TARGET_US, m


@pytest.mark.needs_config  # a board with emulated short ticks
@pytest.mark.needs_process
def test_device_timestamps_map_to_host_time_across_three_wraps_and_a_long_gap(
    tmp_path: Path, device_factory: DeviceFactory, mqtt: HostMqtt
) -> None:
    dev = _short_period_device(tmp_path, device_factory, start=SHORT_PERIOD - 150_000)
    dev.wait_mqtt()
    sync = ClockSync.for_device(dev)
    since = dev.log.cursor
    t_end = time.monotonic() + 3.5
    while time.monotonic() < t_end:
        sync.collect_serial(dev, n=10, interval_s=0.01)
        sync.collect_mqtt(dev, mqtt, n=2, interval_s=0.01)
    m1 = sync.fit()
    assert sync.wraps >= 3, f"only {sync.wraps} wraps in {m1.span_s:.1f} s"
    # a gap of more than half a period, then a re-sync: the new samples must join up
    time.sleep(0.8)
    m2 = sync.resync(dev, n=20)
    assert m2.n == m1.n + 20 and m2.windows >= 2
    pongs = [e for e in dev.log.events(since) if e.kind == "pong"]
    pongs += [e for e in mqtt.log.events() if e.topic == f"{dev.base}/pong"]
    truth = unix_clock_truth(dev)

    errs_ms = []
    for model in (m1, m2):
        for ev in pongs:
            for field in ("t_rx", "ticks"):
                raw = int(ev.data[field])
                got = model.device_to_host_ns(raw, near_host_ns=ev.host_ns)
                err_ms = (got - truth.device_to_host_ns(raw, ev.host_ns)) / 1e6
                assert abs(err_ms) * 1000 <= model.error_bound_us + ROUNDING_US, (field, err_ms, model)
                errs_ms.append(err_ms)
    worst = max(abs(e) for e in errs_ms)
    print(
        f"\nshort period: {sync.wraps} wraps, {len(pongs)} serial and MQTT pongs mapped, "
        f"worst error {worst * 1000:.0f} µs; "
        f"offset error {truth.offset_error_us(m1):+.1f} / {truth.offset_error_us(m2):+.1f} µs, "
        f"skew {m2.skew_ppm:+.1f} ± {m2.skew_stderr_ppm:.1f} ppm"
    )
    # the unwrapped device clock runs with the host's: no sample is a period off
    for s in sync.samples:
        assert abs(s.offset_us - m2.offset_at(s.t_recv_ns)) <= m2.error_bound_us + s.uncertainty_us + ROUNDING_US
    assert abs(truth.offset_error_us(m2)) <= min(m2.error_bound_us + ROUNDING_US, MQTT_SYNC_TARGET_US), m2
    assert m2.skew_fitted and abs(m2.skew_ppm) < 500  # same clock: no real drift
