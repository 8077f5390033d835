"""Benchmark: MQTT light journeys on the Unix port, in one run.

1. closed loop beside the floor (a paho client publishing to itself through
   the same broker), as a ratio;
2. open loop at 10, 100 and 1000 commands/s (latency from each command's
   intended start, so stalls are not hidden);
3. 1, 10 and 50 Unix-port devices on one broker, each in closed loop at once.

    python benchmarks/journeys.py [--count 1000] [--devices 1,10,50] [--rates 10,100,1000]
"""

from __future__ import annotations

import argparse
import sys
import threading
import time

from host_harness.broker.info import BrokerInfo
from host_harness.broker.start import start_broker
from host_harness.core import latency
from host_harness.core.results import JourneyRun
from host_harness.core.table import render
from host_harness.dut.device import Device, open_device
from host_harness.dut.unix_device import DEFAULT_HEAPSIZE
from host_harness.link.mqtt_client import HostMqtt
from host_harness.measure.clocksync import clock_for
from host_harness.measure.floor import floor_ms
from host_harness.measure.journeys import Journeys
from host_harness.measure.load import closed_loop, open_loop_mqtt
from host_harness.measure.progress import Progress


def row(label: str, run: JourneyRun, floor_p50: float) -> list[object]:
    t = run.total()
    return [label, len(run.journeys), len(run.lost), t.p50, t.p90, t.p99, t.max, f"{t.p50 / floor_p50:.2f}x"]


def many_devices(info: BrokerInfo, n: int, per_device: int, heapsize: str) -> JourneyRun:
    bar = Progress(n, f"start {n:>2} devices")
    devs: list[Device] = []
    for _ in range(n):
        devs.append(open_device("unix", "unix", info, heapsize=heapsize))
        bar.update()
    bar.close()
    runs: list[JourneyRun] = []
    clients: list[HostMqtt] = []
    try:
        for d in devs:
            d.wait_mqtt()
        js = []
        for d in devs:
            mq = HostMqtt(info, "bench").connect()
            clients.append(mq)
            js.append(Journeys(d, mq, timeout=10))
        clock = clock_for(devs[0])[0]
        lock = threading.Lock()

        def work(j: Journeys) -> None:
            r = closed_loop(j, "mqtt", per_device, clock)
            with lock:
                runs.append(r)

        threads = [threading.Thread(target=work, args=(j,)) for j in js]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=600)
        dt = time.monotonic() - t0
        print(f"  {n} devices: {n * per_device} journeys in {dt:.1f} s", file=sys.stderr)
    finally:
        for mq in clients:
            mq.close()
        for d in devs:
            d.close()
    merged = JourneyRun("mqtt", f"{n} devices")
    for r in runs:
        merged.journeys += r.journeys
        merged.hop_times += r.hop_times
        merged.lost += r.lost
    return merged


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--broker", default=None)
    ap.add_argument("--heapsize", default=DEFAULT_HEAPSIZE)
    ap.add_argument("--rates", default="10,100,1000")
    ap.add_argument("--devices", default="1,10,50")
    ap.add_argument("--per-device", type=int, default=100)
    args = ap.parse_args()
    rows: list[list[object]] = []
    with start_broker(args.broker) as broker:
        print(f"broker: {broker.describe()}")
        dev = open_device("unix", "unix", broker.info, heapsize=args.heapsize)
        try:
            dev.wait_mqtt()
            mq = HostMqtt(broker.info, "bench").connect()
            js = Journeys(dev, mq)
            clock = clock_for(dev, mq)[0]
            closed_loop(js, "mqtt", 50, clock)  # warm-up
            fl = latency.summarize(floor_ms(mq, args.count))
            rows.append(["floor: paho -> broker -> paho", args.count, 0, fl.p50, fl.p90, fl.p99, fl.max, "1.00x"])
            bar = Progress(args.count, "closed  ")
            rows.append(row("journey, closed loop", closed_loop(js, "mqtt", args.count, clock, progress=bar), fl.p50))
            bar.close()
            for rate in [float(x) for x in args.rates.split(",") if x]:
                n = int(min(args.count * 2, max(100, rate * 5)))
                bar = Progress(n, f"{rate:>5g}/s ")
                run = open_loop_mqtt(js, rate, n, clock, progress=bar)
                bar.close()
                rows.append(row(f"journey, open loop {rate:g}/s", run, fl.p50))
            mq.close()
        finally:
            dev.close()
        for n in [int(x) for x in args.devices.split(",") if x]:
            run = many_devices(broker.info, n, args.per_device, args.heapsize)
            rows.append(row(f"journey, {n} devices at once", run, fl.p50))
    print()
    print(render(["MQTT journey (ms)", "n", "lost", "p50", "p90", "p99", "max", "p50/floor"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
