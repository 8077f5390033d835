"""Benchmark: what waking costs MicroPython on the Unix port, by way of waiting.

A journey with commands 200 ms apart starts with every process on the path
asleep, and each wakes in its own way. The naive light (benchmarks/peers.py)
waits in one blocking read; lightctl's firmware waits in asyncio, beside its
console and its timers, and its MQTT reader resumes through the scheduler.
This splits out what that way of waiting costs by itself, with no MQTT and no
broker: one MicroPython process per way of waiting (benchmarks/wake_probe/main.py)
waits for one byte on a loopback TCP socket and answers with its ``ticks_us``
at the moment its wait ended, which on the Unix port is the host's
``CLOCK_MONOTONIC``. The delay is from the host's clock just before its send
to the probe's. The probes are sent to in turn, each idle for the spacing
between its bytes, so the machine's own drift falls on all of them alike.

    python benchmarks/wake.py [--count 200] [--spacing-ms 200]
"""

from __future__ import annotations

import argparse
import contextlib
import random
import socket
import subprocess
import time
from pathlib import Path

from host_harness import children
from host_harness.core import latency
from host_harness.core.table import render
from host_harness.dut.unix_device import DEFAULT_HEAPSIZE, find_micropython
from host_harness.measure.progress import Progress

PROBE = Path(__file__).resolve().parent / "wake_probe" / "main.py"
WAITS = {
    "read": "a blocking read (umqtt.simple's wait_msg)",
    "poll": "select.poll, then a read (what asyncio does underneath)",
    "asyncio": "a task awaiting the stream (lightctl's MQTT reader, alone)",
    "firmware": "the same beside lightctl's other idle waits (console on stdin, a timer task)",
}
TIMEOUT_S = 5.0
WARM_UP = 5  # rounds before those that count


class Probe:
    """One probe process, connected; ``wake()`` sends a byte and returns the µs until it woke."""

    def __init__(self, wait: str, micropython: str, heapsize: str) -> None:
        self.wait = wait
        ls = socket.socket()
        ls.bind(("127.0.0.1", 0))
        ls.listen(1)
        ls.settimeout(TIMEOUT_S)
        self.proc = children.spawn(
            [micropython, "-X", f"heapsize={heapsize}", str(PROBE), wait, str(ls.getsockname()[1])],
            stdin=subprocess.PIPE,  # kept open and silent: the console the firmware waits on
            stdout=subprocess.DEVNULL,
        )
        try:
            self.sock, _ = ls.accept()
        except TimeoutError:
            self.close()
            raise RuntimeError(f"the {wait} probe did not connect within {TIMEOUT_S:g} s") from None
        finally:
            ls.close()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(TIMEOUT_S)
        self.rest = b""

    def wake(self) -> float:
        t = time.monotonic_ns()
        self.sock.send(b"x")
        while b"\n" not in self.rest:
            try:
                got = self.sock.recv(64)
            except TimeoutError:
                raise RuntimeError(f"the {self.wait} probe did not answer within {TIMEOUT_S:g} s") from None
            if not got:
                raise RuntimeError(f"the {self.wait} probe closed its socket")
            self.rest += got
        line, self.rest = self.rest.split(b"\n", 1)
        return int(line) - t / 1e3

    def close(self) -> None:
        if hasattr(self, "sock"):
            self.sock.close()  # the probe reads the end and exits: given a moment, then ended
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(TIMEOUT_S)
        children.end(self.proc)


def run(count: int, spacing_ms: float, heapsize: str) -> dict[str, list[float]]:
    micropython = find_micropython()
    probes = [Probe(w, micropython, heapsize) for w in WAITS]
    out: dict[str, list[float]] = {w: [] for w in WAITS}
    gap = spacing_ms / 1000 / len(probes)
    bar = Progress(count + WARM_UP, "wake")
    try:
        for i in range(count + WARM_UP):
            order = random.sample(probes, len(probes))
            for p in order:
                time.sleep(gap)
                us = p.wake()
                if i >= WARM_UP:
                    out[p.wait].append(us)
            bar.update()
    finally:
        bar.close()
        for p in probes:
            p.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=200, help="wake-ups per way of waiting (default 200)")
    ap.add_argument("--spacing-ms", type=float, default=200.0, help="idle time of each probe between its bytes")
    ap.add_argument("--heapsize", default=DEFAULT_HEAPSIZE)
    args = ap.parse_args()
    if args.count < 1 or args.spacing_ms < 0:
        ap.error("--count must be at least 1 and --spacing-ms not negative")
    res = run(args.count, args.spacing_ms, args.heapsize)
    rows = []
    base = 0
    for wait, what in WAITS.items():  # "read" first: the floor
        s = latency.summarize(x / 1000 for x in res[wait])
        p50, p99 = round(s.p50 * 1000), round(s.p99 * 1000)
        base = base or p50
        rows.append([wait, s.count, p50, p99, f"{p50 / base:.2f}x", f"{p50 - base:+d}", what])
    print(render(["wait", "n", "p50 µs", "p99 µs", "p50 / read", "p50 - read µs", "how"], rows, "lrrrrrl"))
    print(f"µs from the host's send to the probe's ticks_us after its wait, each probe idle {args.spacing_ms:g} ms "
          f"between bytes, heap {args.heapsize}, the probes sent to in turn")  # fmt: skip


if __name__ == "__main__":
    main()
