"""Measure a link with real pings from the device's namespace."""

from __future__ import annotations

import re
import subprocess

from .links import Link

REACH_TRIES = 20  # single pings, 1 s each at most, before a link is given up as dead


def reach(link: Link, tries: int = REACH_TRIES) -> int:
    """One answered ping across the link before anything is measured, so the
    neighbours on its path are resolved: on a lossy link a lost ARP request or
    reply holds every flow's first half second (the kernel queues packets for
    an unresolved neighbour and drops what overflows), a burst that is not the
    loss rate being measured. Returns the pings it took; RuntimeError when none
    of ``tries`` is answered or a send fails locally."""
    for n in range(1, tries + 1):
        p = subprocess.run(
            [*link.prefix(), "ping", "-n", "-c", "1", "-W", "1", link.broker_ip],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if p.stderr.strip():
            raise RuntimeError(f"ping from {link.dev_ns} failed locally: {p.stderr.strip().splitlines()[-1]}")
        if p.returncode == 0:
            return n
    raise RuntimeError(f"no ping from {link.dev_ns} to {link.broker_ip} was answered in {tries} tries of 1 s")


def ping_rtts(link: Link, flows: int, count: int, interval: float) -> tuple[list[float], int]:
    """Round trips (ms) of ``flows`` parallel pings (each its own ICMP flow) from the
    device's namespace to the broker's side, and how many were sent, once the
    path is reached (see ``reach``). Raises RuntimeError when a send fails
    locally (a link must drop silently)."""
    reach(link)
    procs = [
        subprocess.Popen(
            [*link.prefix(), "ping", "-n", "-c", str(count), "-i", str(interval), "-W", "2", link.broker_ip],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(flows)
    ]
    rtts: list[float] = []
    errors: list[str] = []
    for p in procs:
        out, err = p.communicate(timeout=count * interval + 30)
        if err.strip():
            errors.append(err.strip().splitlines()[-1])
        rtts += [float(x) for x in re.findall(r"time=([\d.]+) ms", out)]
    if errors:
        raise RuntimeError(f"ping from {link.dev_ns} failed locally: {errors[0]}")
    return rtts, flows * count


def quantile(xs: list[float], q: float) -> float:
    """Nearest-rank quantile (q in 0..1) of ``xs``."""
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]
