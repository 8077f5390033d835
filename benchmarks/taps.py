"""Benchmark: what the taps cost, per path, beside their delivery floor, in one run.

Per path (one stock Mosquitto, one tuned, a tuned local Mosquitto bridged to a
tuned cloud one), closed-loop MQTT journeys of a Unix-port device alternate
blocks with the taps subscribed and unsubscribed (measure.tapcost); the table
gives the end-to-end p50 and p99 each way, their difference and ratio, and
each tap's delivery floor (half its own round trip through its broker).

    python benchmarks/taps.py [--count 200]
"""

from __future__ import annotations

import argparse
import statistics
import sys

from host_harness.broker.bridge import BridgedBrokers, device_side
from host_harness.broker.mosquitto import find_mosquitto
from host_harness.broker.running import RunningBroker
from host_harness.broker.start import start_broker
from host_harness.core.clocktruth import UnixClockTruth
from host_harness.core.results import JourneyRun
from host_harness.core.table import render
from host_harness.dut.device import open_device
from host_harness.link.mqtt_client import HostMqtt
from host_harness.measure.journeys import Journeys
from host_harness.measure.load import closed_loop
from host_harness.measure.tapcost import alternate
from host_harness.measure.taps import TapPoint, Taps


def p99(xs: list[float]) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(0.99 * len(s)))]


def one(name: str, broker: RunningBroker, count: int) -> list[object]:
    points = [TapPoint("broker", broker.info)]
    if isinstance(broker, BridgedBrokers):
        points = [TapPoint("cloud", broker.info), TapPoint("local", broker.device_info)]
    dev = open_device("unix", "unix", device_side(broker))
    mq = HostMqtt(broker.info, "bench").connect()
    taps = Taps(points, lambda info, n: HostMqtt(info, n)).connect()
    try:
        dev.wait_mqtt()
        js = Journeys(dev, mq)
        clock = UnixClockTruth()
        closed_loop(js, "mqtt", 20, clock)  # warm-up, untapped
        floors = taps.floor()
        js.taps = taps
        run = JourneyRun("mqtt")
        base = alternate(js, taps, count, clock, into=run)
    finally:
        taps.close()
        mq.close()
        dev.close()
    w, wo = [j.e2e_ms for j in run.journeys], [j.e2e_ms for j in base.journeys]
    d50 = statistics.median(w) - statistics.median(wo)
    return [
        name,
        f"{len(w)}/{len(wo)}",
        statistics.median(wo),
        statistics.median(w),
        d50,
        f"{statistics.median(w) / statistics.median(wo):.2f}x",
        p99(wo),
        p99(w),
        ", ".join(f"{f.name} {f.p50:.3f}/{f.p99:.3f}" for f in floors),
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=200, help="tapped journeys per path (as many untapped)")
    a = ap.parse_args()
    exe = find_mosquitto()
    if exe is None:
        print("error: this benchmark needs mosquitto", file=sys.stderr)
        return 2
    rows = []
    for name, make in (
        ("mosquitto (stock)", lambda: start_broker("mosquitto")),
        ("mosquitto-tuned", lambda: start_broker("mosquitto-tuned")),
        ("bridge, tuned", lambda: BridgedBrokers(exe, tuned=True).start()),
    ):
        with make() as broker:
            rows.append(one(name, broker, a.count))
            print(f"{name}: done", file=sys.stderr, flush=True)
    print(
        render(
            [
                "path",
                "n with/without",
                "p50 without",
                "p50 with",
                "p50 +",
                "ratio",
                "p99 without",
                "p99 with",
                "tap floor p50/p99 (ms)",
            ],
            rows,
            align="lrrrrrrrl",
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
