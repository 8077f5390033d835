"""Benchmark: the serial console at ESP32 sizes, on the Unix port, in one run.

1. a burst of N set commands written at once to the emulated ESP32 console
   (388-byte buffer, 115200 baud, paced output): with the host's window off,
   then on — commands confirmed, lost, errors, and the time to the last reply;
2. serial journeys (closed loop) with no console emulation, with the input
   at the baud rate only and with paced output too — p50/p99 and
   the ratio to the unemulated p50.

    python benchmarks/console.py [--burst 200] [--count 200]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from typing import Any

from host_harness.core.events import WaitTimeout
from host_harness.core.table import render
from host_harness.dut import boards
from host_harness.dut.device import Device, open_device

EMULATIONS: dict[str, dict[str, Any] | None] = {
    "none": None,
    "input only at 115200": {"rx_bytes": 388, "baud": 115200, "paced_output": False},
    "input and output at 115200": {"rx_bytes": 388, "baud": 115200, "paced_output": True},
}


def _device(console: dict[str, Any] | None, tmp: str) -> Device:
    b = boards.load("unix")
    b.pop("console", None)
    if console:
        b["console"] = console
    path = f"{tmp}/board-{abs(hash(json.dumps(console)))}.json"
    with open(path, "w") as f:
        json.dump(b, f)
    return open_device("unix", board=path)


def burst(dev: Device, n: int, window: bool) -> list[object]:
    dev.link.credit.enabled = window
    since = dev.log.cursor
    ids = [f"b{int(window)}-{i}" for i in range(n)]
    data = b"".join(
        json.dumps({"op": "set", "id": i, "brightness": k % 255 + 1}).encode() + b"\n" for k, i in enumerate(ids)
    )
    t0 = time.monotonic()
    dev.link.write_raw(data)
    deadline = t0 + 120
    while True:
        try:
            dev.ping(timeout=1)
            break
        except WaitTimeout:
            if time.monotonic() > deadline:
                raise
    elapsed = time.monotonic() - t0
    evs = dev.log.events(since)
    ok = {e.get("id") for e in evs if e.kind == "change" and e.get("id") in ids}
    errors = sum(1 for e in evs if e.kind == "error")
    return ["on" if window else "off", n, len(data), len(ok), n - len(ok), errors, elapsed]


def journeys(dev: Device, count: int) -> list[float]:
    out = []
    for i in range(count):
        t, ev = dev.request("set", brightness=i % 255 + 1)
        out.append((ev.host_ns - t) / 1e6)
    return sorted(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--burst", type=int, default=200)
    ap.add_argument("--count", type=int, default=200)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        dev = _device(EMULATIONS["input and output at 115200"], tmp)
        try:
            rows = [burst(dev, args.burst, False), burst(dev, args.burst, True)]
        finally:
            dev.close()
        print(f"burst of {args.burst} set commands at once, emulated ESP32 console (paced output)")
        print(render(["window", "sent", "bytes", "confirmed", "lost", "errors", "s to last reply"], rows))
        print()
        rows = []
        base = 0.0
        for name, console in EMULATIONS.items():
            dev = _device(console, tmp)
            try:
                ms = journeys(dev, args.count)
            finally:
                dev.close()
            p50, p99 = ms[len(ms) // 2], ms[int(len(ms) * 0.99) - 1]
            base = base or p50
            rows.append([name, len(ms), p50, p99, f"{p50 / base:.2f}x"])
        print(f"serial journeys, closed loop, {args.count} each (host send -> change line received)")
        print(render(["console emulation", "n", "p50 ms", "p99 ms", "p50 ratio"], rows))


if __name__ == "__main__":
    main()
