"""Measure a link with real pings from the device's namespace."""

from __future__ import annotations

import re
import subprocess

from .links import Link


def ping_rtts(link: Link, flows: int, count: int, interval: float) -> tuple[list[float], int]:
    """Round trips (ms) of ``flows`` parallel pings (each its own ICMP flow) from the
    device's namespace to the broker's side, and how many were sent. Raises
    RuntimeError when a send fails locally (a link must drop silently)."""
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
