"""``lightctl run --devices N``: a room of N lights on one broker, served by one host client.

Starts N Unix-port devices in one group, syncs each one's clock, and then
sends group commands both ways (N commands back to back, one message on the
group topic), printing first-on / all-on / spread at p50/p99 per mode; then
every device in closed loop at once through the one client; then each
device's RAM and CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

from host_harness.broker.start import start_broker
from host_harness.core import group as groups
from host_harness.core import latency
from host_harness.core.group import GroupJourney
from host_harness.core.table import render
from host_harness.dut.fleet import ProcUsage, group_name, start_unix_devices, usage
from host_harness.measure.fleet import Fleet
from host_harness.measure.load import command_for
from host_harness.measure.progress import Progress


def group_runs(fleet: Fleet, count: int, seed: int = 1, warmup: int = 5) -> dict[str, list[GroupJourney]]:
    """``count`` group commands per mode ("each", then "group"), after ``warmup`` of each."""
    out: dict[str, list[GroupJourney]] = {}
    for via in groups.MODES:
        rng = random.Random(seed)
        for i in range(warmup):
            fleet.group().set(*command_for(i, rng), via=via)
        bar = Progress(count, f"group commands ({via})")
        js = []
        for i in range(count):
            gj = fleet.group().set(*command_for(i, rng), via=via)
            js.append(gj)
            bar.update(1, f"spread {gj.spread_ms:.2f} ms" if gj.pin_ns else "")
        bar.close()
        out[via] = js
    return out


def usage_rows(before: list[ProcUsage], after: list[ProcUsage], seconds: float) -> list[list[object]]:
    """Per-device RSS (MiB) and CPU over the measured phase, and the harness's own."""
    cpu0 = {u.pid: u.cpu_s for u in before}
    rss = latency.summarize(u.rss_kib / 1024 for u in after)
    anon = latency.summarize(u.anon_kib / 1024 for u in after)
    cpu = [u.cpu_s - cpu0.get(u.pid, 0.0) for u in after]
    me = ProcUsage.read(os.getpid())
    return [
        ["devices", len(after)],
        ["RSS per device, p50 / max (MiB)", f"{rss.p50:.1f} / {rss.max:.1f}"],
        ["own (anonymous) RSS per device, p50 / max (MiB)", f"{anon.p50:.1f} / {anon.max:.1f}"],
        ["own RSS of all devices (MiB)", f"{sum(u.anon_kib for u in after) / 1024:.0f}"],
        ["CPU per device while measured, mean (s)", f"{sum(cpu) / max(1, len(cpu)):.2f} of {seconds:.1f} s"],
        ["CPU of all devices while measured (cores)", f"{sum(cpu) / max(1e-9, seconds):.2f}"],
        ["host harness RSS (MiB) / CPU since start (s)", f"{me.rss_kib / 1024:.0f} / {me.cpu_s:.1f}"],
    ]


def run_devices(args: argparse.Namespace, board: str) -> int:
    n = int(args.devices)
    if n < 1:
        print(f"error: --devices {n}: need at least 1", file=sys.stderr)
        return 2
    if args.device != "unix":
        print("error: --devices starts Unix-port devices; boards are several with the pytest plugin", file=sys.stderr)
        return 2
    with start_broker(args.broker) as broker:
        print(f"broker: {broker.describe()}")
        g = group_name()
        t0 = time.monotonic()
        devs = start_unix_devices(n, broker.info, board, g, args.micropython, args.heapsize)
        print(f"devices: {n} Unix-port devices ({args.heapsize} heap each) started in {time.monotonic() - t0:.1f} s")
        try:
            fleet = Fleet(devs, broker.info, group=g, timeout=args.timeout, progress=True, ca_file=args.ca)
            try:
                print(f"host: one MQTT client for all {n} devices; group topic {g}")
                print(f"clock: {fleet.clock_note()}")
                before, t_meas = usage(devs), time.monotonic()
                runs = group_runs(fleet, args.count, args.seed)
                per_device = max(10, args.count // n)
                bar = Progress(per_device * n, "all devices at once")
                at_once = fleet.closed_loop_all(per_device, args.seed, bar)
                bar.close()
                after, seconds = usage(devs), time.monotonic() - t_meas
            finally:
                fleet.close()
        finally:
            for d in devs:
                d.close()
    print()
    print(render(groups.HEADERS, groups.rows(runs)))
    t = at_once.total()
    label = f"{n} devices x {per_device}, one client"
    print()
    print(
        render(
            ["mqtt journey, every device at once (ms)", "n", "lost", "p50", "p99", "max"],
            [[label, len(at_once.journeys), len(at_once.lost), t.p50, t.p99, t.max]],
        )
    )
    print()
    print(render(["resources", "value"], usage_rows(before, after, seconds)))
    incomplete = sum(1 for js in runs.values() for j in js if not j.complete)
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"groups": {k: [j.as_dict() for j in js] for k, js in runs.items()}, "at_once": at_once.as_dict()},
                indent=1,
            )
        )
        print(f"raw timings: {args.json}")
    ok = not incomplete and not at_once.lost
    print(f"\nverdict: {'PASS' if ok else 'FAIL'} ({incomplete} group commands incomplete, {len(at_once.lost)} lost)")
    return 0 if ok else 1
