"""Benchmark: how late an open-loop sender is on this machine, with a fixed spin and with the Pacer.

An open loop times each journey from its intended start, so the sender's own
lateness counts in every journey. Per schedule, sends alternate between the
fixed spin (sleep to 0.5 ms before the time, spin the rest) and the Pacer
(spin as long as this machine's sleeps have lately woken late), so both see
the same machine. Nothing is sent: this is the sender alone.

    python benchmarks/pace.py [--count 60] [--rates 5,10,100]
"""

from __future__ import annotations

import argparse
import sys
import time

from host_harness.core import latency
from host_harness.core.table import render
from host_harness.measure import pace
from host_harness.measure.progress import Progress


def measure(rate: float, count: int) -> tuple[list[float], list[float], pace.Pacer]:
    """Lateness (ms) of ``count`` sends each way, alternating, ``rate`` per second in all."""
    interval = int(1e9 / rate)
    pacer = pace.Pacer(interval * 2)  # each way sends every other slot
    fixed: list[float] = []
    learned: list[float] = []
    bar = Progress(2 * count, f"{rate:g}/s")
    t0 = time.monotonic_ns() + 20_000_000
    for i in range(2 * count):
        t = t0 + i * interval
        if i % 2:
            learned.append((pacer.until(t) - t) / 1e6)
        else:
            fixed.append((pace.until(t, min(pace.SPIN_NS, pace.spin_for(interval * 2))) - t) / 1e6)
        bar.update()
    bar.close()
    return fixed, learned, pacer


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=60, help="sends each way per schedule (default 60)")
    ap.add_argument("--rates", default="5,10,100", help="sends per second, comma-separated (default 5,10,100)")
    a = ap.parse_args(argv)
    try:
        rates = [float(x) for x in a.rates.split(",") if x.strip()]
    except ValueError:
        ap.error(f"--rates {a.rates!r}: numbers, comma-separated")
    if a.count < 2 or not rates or min(rates) <= 0:
        ap.error("--count must be 2 or more and every rate more than 0")
    rows: list[list[object]] = []
    for rate in rates:
        fixed, learned, pacer = measure(rate, a.count)
        f, p = latency.summarize(fixed), latency.summarize(learned)
        woke = latency.summarize([x / 1e6 for x in pacer.woke])
        rows.append(
            [f"{rate:g}/s", woke.p50, woke.max, f.p50, f.p99, p.p50, p.p99, pacer.most_spun / 1e6,
             f"{p.p50 / f.p50:.2f}x" if f.p50 else "-"]
        )  # fmt: skip
    print(
        render(
            ["schedule", "sleep woke late p50", "max", "fixed spin p50", "p99", "Pacer p50", "p99", "Pacer spun",
             "Pacer / fixed p50"],
            rows,
        )
    )  # fmt: skip
    print(
        "ms; how late each send left after its intended time; fixed spin: sleep to 0.5 ms before it and spin;\n"
        "Pacer: spin as long as the latest of its last 32 sleeps woke late (+0.1 ms), at most a twentieth of\n"
        "the interval; both alternate on one schedule, so they see the same machine"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
