"""Benchmark: a fleet of Unix-port lights on one broker, served by one host MQTT client.

For each fleet size (default 1, 10, 50, 100), in one run:

1. every device in closed loop at once, all through one client (each next
   command sent from the client's network thread as the confirmation lands);
2. group commands both ways: N commands back to back ("each") and one
   message on the group topic ("group"): first light on, all lights on and
   the spread between them, on each device's synced clock;
3. per device RSS and CPU (from /proc), the broker's and the harness's CPU;

beside the floor (a paho client publishing to itself through the same
broker) and the old way for comparison: one client and one thread per device
(benchmarks/journeys.py many_devices).

    python benchmarks/fleet.py [--sizes 1,10,50,100] [--old 10,50] [--groups 100] [--broker mosquitto-tuned]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from journeys import many_devices  # the old one-client-per-device measurement

from host_harness.broker.start import start_broker
from host_harness.cli.devices import group_runs
from host_harness.core import group as groups
from host_harness.core import latency
from host_harness.core.table import render
from host_harness.dut.fleet import ProcUsage, group_name, start_unix_devices, usage
from host_harness.dut.unix_device import DEFAULT_HEAPSIZE
from host_harness.link.mqtt_client import HostMqtt
from host_harness.measure.fleet import Fleet
from host_harness.measure.floor import floor_ms
from host_harness.measure.progress import Progress


def per_device_for(n: int, total: int) -> int:
    return max(40, total // n)


def cpu_of(pid: int | None) -> float:
    return ProcUsage.read(pid).cpu_s if pid else 0.0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1,10,50,100")
    ap.add_argument("--old", default="10,50", help="sizes to measure the old way too (one client + thread per device)")
    ap.add_argument("--total", type=int, default=1000, help="closed-loop journeys per size (at least 40 per device)")
    ap.add_argument("--groups", type=int, default=100, help="group commands per mode and size")
    ap.add_argument("--floor", type=int, default=1000)
    ap.add_argument("--broker", default="mosquitto-tuned")
    ap.add_argument("--heapsize", default=DEFAULT_HEAPSIZE)
    args = ap.parse_args()
    sizes = [int(x) for x in args.sizes.split(",") if x]
    old = [int(x) for x in args.old.split(",") if x]
    journeys: list[list[object]] = []
    group_rows: list[list[object]] = []
    res_rows: list[list[object]] = []
    with start_broker(args.broker) as broker:
        print(f"broker: {broker.describe()}")
        proc = getattr(broker, "process", None)
        broker_pid = proc.pid if proc is not None else None
        mq = HostMqtt(broker.info, "floor").connect()
        fl = latency.summarize(floor_ms(mq, args.floor))
        mq.close()
        journeys.append(["floor: paho -> broker -> paho", args.floor, 0, fl.p50, fl.p99, fl.max, "1.00x"])
        for n in sizes:
            g = group_name()
            t0 = time.monotonic()
            devs = start_unix_devices(n, broker.info, "unix", g, heapsize=args.heapsize)
            started = time.monotonic() - t0
            try:
                fleet = Fleet(devs, broker.info, group=g, timeout=10, progress=True)
                try:
                    print(f"{n} devices: started in {started:.1f} s; clock: {fleet.clock_note()}", file=sys.stderr)
                    before, t_meas = usage(devs), time.monotonic()
                    b_cpu, h_cpu = cpu_of(broker_pid), cpu_of(os.getpid())
                    per = per_device_for(n, args.total)
                    bar = Progress(per * n, f"{n} at once")
                    run = fleet.closed_loop_all(per, progress=bar)
                    bar.close()
                    runs = group_runs(fleet, args.groups)
                    after, secs = usage(devs), time.monotonic() - t_meas
                    b_cpu, h_cpu = cpu_of(broker_pid) - b_cpu, cpu_of(os.getpid()) - h_cpu
                finally:
                    fleet.close()
            finally:
                for d in devs:
                    d.close()
            t = run.total()
            journeys.append(
                [f"{n} devices at once, one client", len(run.journeys), len(run.lost), t.p50, t.p99, t.max,
                 f"{t.p50 / fl.p50:.1f}x"]
            )  # fmt: skip
            for mode, js in runs.items():
                s = {f: groups.summarize(js, f) for f in ("first_on", "all_on", "spread")}
                inc = sum(1 for j in js if not j.complete)
                group_rows.append(
                    [f"{n} lights, {mode}", len(js), inc, s["first_on"].p50, s["first_on"].p99,
                     s["all_on"].p50, s["all_on"].p99, s["spread"].p50, s["spread"].p99]
                )  # fmt: skip
            cpu0 = {u.pid: u.cpu_s for u in before}
            rss = latency.summarize(u.rss_kib / 1024 for u in after)
            anon = latency.summarize(u.anon_kib / 1024 for u in after)
            dev_cpu = sum(u.cpu_s - cpu0.get(u.pid, 0.0) for u in after)
            res_rows.append(
                [n, f"{started:.1f}", f"{rss.p50:.1f}", f"{anon.p50:.1f}",
                 f"{sum(u.anon_kib for u in after) / 1024:.0f}", f"{1000 * dev_cpu / max(1, n) / secs:.0f}",
                 f"{dev_cpu / secs:.2f}", f"{b_cpu / secs:.2f}", f"{h_cpu / secs:.2f}", f"{secs:.1f}"]
            )  # fmt: skip
        for n in old:
            r = many_devices(broker.info, n, per_device_for(n, args.total), args.heapsize)
            t = r.total()
            journeys.append(
                [f"{n} devices at once, client+thread each (old)", len(r.journeys), len(r.lost), t.p50, t.p99, t.max,
                 f"{t.p50 / fl.p50:.1f}x"]
            )  # fmt: skip
    print()
    print(render(["MQTT journey (ms)", "n", "lost", "p50", "p99", "max", "p50/floor"], journeys))
    print()
    print(
        render(
            ["group command (ms)", "n", "incomplete", "first p50", "first p99", "all p50", "all p99", "spread p50",
             "spread p99"],
            group_rows,
        )
    )  # fmt: skip
    print()
    print(
        render(
            ["devices", "start s", "RSS/dev MiB", "own/dev MiB", "own all MiB", "CPU/dev ms/s", "devices cores",
             "broker cores", "harness cores", "measured s"],
            res_rows,
        )
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
