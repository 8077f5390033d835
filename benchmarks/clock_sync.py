"""Benchmark: clock sync accuracy against the truth, serial vs MQTT, on the Unix port.

The Unix-port device reads the host's own monotonic clock (shifted by an
offset the host learns from the device's REPL at the end of the run when the
board emulates a short ticks period), so every estimate can be scored.

For each clock (native 2**62 period; emulated 2**20 µs period, which wraps
about once a second) and each transport, ``--rounds`` independent syncs of
``--n`` pings each are fitted; the table gives each round's offset error
against the truth, with the device's receive stamp (NTP style, what
ClockSync uses) and without it (Cristian style: the pong's ticks taken as
the midpoint). The skew column is one fit over all of that transport's
rounds (the true skew is 0: one clock). "map err" is the worst error of any
pong's device stamps mapped back to host time by its round's model.

    python benchmarks/clock_sync.py [--n 200] [--rounds 5] [--broker URL] [--heapsize 80k] [--truth-heapsize 256k]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from host_harness.broker.start import start_broker
from host_harness.core.clockmodel import ClockModel, SyncSample
from host_harness.core.clocktruth import UnixClockTruth
from host_harness.core.table import render
from host_harness.dut import boards
from host_harness.dut.device import open_device
from host_harness.dut.unix_device import DEFAULT_HEAPSIZE
from host_harness.link.mqtt_client import HostMqtt
from host_harness.measure.clocksync import ClockSync, unix_clock_truth
from host_harness.measure.progress import Progress

CLOCKS: dict[str, dict[str, int] | None] = {
    "native (2**62)": None,
    "emulated 2**20, wraps": {"period": 2**20, "start": 2**20 - 100_000},
}


def run_clock(
    name: str, ticks: dict[str, int] | None, broker: Any, args: argparse.Namespace, tmp: Path
) -> list[list[object]]:
    b = boards.load("unix")
    b["ticks"] = ticks
    bf = tmp / f"unix-{'native' if ticks is None else ticks['period']}.json"
    bf.write_text(json.dumps(b))
    # An emulated clock's offset is read from the REPL after Ctrl-C, which needs spare heap.
    dev = open_device("unix", str(bf), broker.info, heapsize=args.heapsize if ticks is None else args.truth_heapsize)
    mq = HostMqtt(broker.info, "bench-sync").connect()
    try:
        dev.wait_mqtt()
        rounds: dict[str, list[tuple[ClockSync, list[SyncSample]]]] = {"serial": [], "mqtt": []}
        whole = {via: ClockSync.for_device(dev) for via in rounds}
        bar = Progress(2 * args.rounds, f"{name:<22}")
        for _ in range(args.rounds):
            for via in rounds:
                sync = ClockSync.for_device(dev)
                if via == "serial":
                    got = sync.collect_serial(dev, args.n, interval_s=args.interval)
                else:
                    got = sync.collect_mqtt(dev, mq, args.n, interval_s=args.interval)
                rounds[via].append((sync, got))
                for s in got:  # the same samples, unwrapped again for the whole-run fit
                    raw_rx = None if s.dev_rx_us is None else s.dev_rx_us % sync.period
                    whole[via].add_pong(s.t_send_ns, s.t_recv_ns, s.dev_ticks_us % sync.period, raw_rx, via)
                bar.update()
        bar.close()
        truth = unix_clock_truth(dev)
    finally:
        mq.close()
        dev.close()
    rows = []
    for via, rs in rounds.items():
        rows.append(row(name, via, rs, whole[via], truth))
    return rows


def row(
    name: str, via: str, rounds: list[tuple[ClockSync, list[SyncSample]]], whole: ClockSync, truth: UnixClockTruth
) -> list[object]:
    errs, errs_cristian, map_errs, rtt_min, rtt_med, bound = [], [], [], [], [], []
    for sync, samples in rounds:
        m = sync.fit()
        errs.append(truth.offset_error_us(m))
        cristian = ClockSync(sync.period, use_device_rx=False)
        for s in samples:
            cristian.add(s)
        errs_cristian.append(truth.offset_error_us(cristian.fit()))
        map_errs.append(max(map_error_us(m, s, truth) for s in samples))
        rtt_min.append(m.rtt_min_us)
        rtt_med.append(m.rtt_median_us)
        bound.append(m.uncertainty_us)
    w = whole.fit()
    abs_errs = [abs(e) for e in errs]
    return [
        name,
        via,
        f"{len(rounds)}x{args_n(rounds)}",
        f"{min(rtt_min):.0f}",
        f"{statistics.median(rtt_med):.0f}",
        f"{statistics.median(bound):.0f}",
        f"{statistics.fmean(errs):+.1f}",
        f"{max(abs_errs):.1f}",
        f"{statistics.fmean(errs_cristian):+.1f}",
        f"{max(abs(e) for e in errs_cristian):.1f}",
        f"{max(map_errs):.0f}",
        f"{w.skew_ppm:+.2f} ± {w.skew_stderr_ppm:.2f}" if w.skew_fitted else "not fitted",
        whole.wraps,
    ]


def args_n(rounds: list[tuple[ClockSync, list[SyncSample]]]) -> int:
    return max(len(got) for _, got in rounds)


def map_error_us(m: ClockModel, s: SyncSample, truth: UnixClockTruth) -> float:
    worst = 0.0
    for dev in (s.dev_ticks_us, s.dev_rx_us):
        if dev is None:
            continue
        raw = dev % m.period
        got = m.device_to_host_ns(raw, near_host_ns=s.t_recv_ns)
        worst = max(worst, abs(got - truth.device_to_host_ns(raw, s.t_recv_ns)) / 1000)
    return worst


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200, help="pings per sync round")
    ap.add_argument("--rounds", type=int, default=5, help="sync rounds per clock and transport")
    ap.add_argument("--interval", type=float, default=0.002, help="seconds between pings")
    ap.add_argument("--broker", default=None)
    ap.add_argument("--heapsize", default=DEFAULT_HEAPSIZE, help="device heap (native clock)")
    ap.add_argument("--truth-heapsize", default="256k", help="device heap (emulated clock: room for the REPL)")
    args = ap.parse_args()
    rows: list[list[object]] = []
    with start_broker(args.broker) as broker, tempfile.TemporaryDirectory() as tmp:
        print(f"broker: {broker.describe()}")
        for name, ticks in CLOCKS.items():
            rows += run_clock(name, ticks, broker, args, Path(tmp))
    headers = [
        "clock",
        "via",
        "rounds x n",
        "rtt min",
        "rtt p50",
        "bound",
        "err mean",
        "|err| max",
        "cristian mean",
        "cristian |max|",
        "map err max",
        "skew ppm (all rounds)",
        "wraps",
    ]
    print()
    print(render(headers, rows, align="ll" + "r" * (len(headers) - 2)))
    print(
        "\nµs throughout. err: fitted offset minus the true offset, per round. bound: half the smallest"
        " network delay seen in a round (median over rounds). Targets: |err| <= 100 µs serial, <= 250 µs MQTT."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
