"""HdrHistogram interval logs (.hlog) of a run, e.g. for HistogramLogAnalyzer.

Values are recorded in µs; the interval line's Interval_Max is in ms (the
µs : ms ratio 1000). hdrh's own writer floors that column (``max // ratio``:
5.647 ms came out as 5.000000), so the interval line is written here with the
journeys' true maximum.
"""

from __future__ import annotations

import time
from pathlib import Path

from host_harness.core import latency
from host_harness.core.results import JourneyRun

MAX_UNIT_RATIO = 1000.0  # histogram values (µs) per Interval_Max unit (ms)
LOG_FORMAT_VERSION = "1.3"


def write_hlog(path: Path, run: JourneyRun, start_epoch_s: float | None = None) -> None:
    """One interval covering the run."""
    h = latency.new_histogram()
    for j in run.journeys:
        latency.record_ms(h, j.e2e_ms)
    span_s = 0.0
    if run.journeys:
        span_s = max(0.001, (run.journeys[-1].t_confirm_ns - run.journeys[0].t_send_ns) / 1e9)
    max_ms = max((j.e2e_ms for j in run.journeys), default=0.0)
    start = time.time() if start_epoch_s is None else start_epoch_s
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(start))
    payload = h.encode()
    if isinstance(payload, bytes):
        payload = payload.decode("ascii")
    with path.open("w") as f:
        f.write(f"#lightctl {run.kind} journey, schedule {run.schedule}, values in microseconds\n")
        f.write(f"#[Histogram log format version {LOG_FORMAT_VERSION}]\n")
        f.write(f"#[StartTime: {start:.3f} (seconds since epoch), {stamp} UTC]\n")
        f.write('"StartTimestamp","Interval_Length","Interval_Max","Interval_Compressed_Histogram"\n')
        f.write(f"{0.0:.3f},{span_s:.3f},{max_ms:.3f},{payload}\n")


def read_interval_max(path: Path) -> list[float]:
    """The Interval_Max column of an .hlog (in ms)."""
    out = []
    for line in path.read_text().splitlines():
        if line.startswith("#") or line.startswith('"') or not line.strip():
            continue
        out.append(float(line.split(",")[2]))
    return out
