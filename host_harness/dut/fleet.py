"""Many Unix-port devices at once: started with bounded concurrency, their RAM and CPU read from /proc.

Each device is its own MicroPython process (a 64 KiB heap plus the
interpreter) under its own pseudo-terminal, configured into the same group.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from host_harness.broker.info import BrokerInfo
from host_harness.dut.device import Device, open_device
from host_harness.dut.unix_device import find_micropython
from host_harness.image import firmware_build
from host_harness.measure.progress import Progress

START_CONCURRENCY = 4  # devices booting at once: each boot is CPU-bound for ~0.1 s


def group_name() -> str:
    """A group name no other run on the same broker uses."""
    return f"room-{secrets.token_hex(3)}"


def start_unix_devices(
    n: int,
    broker: BrokerInfo,
    board: str = "unix",
    group: str | None = None,
    micropython: str | None = None,
    heapsize: str | None = "64k",
    config: dict[str, Any] | None = None,
    concurrency: int = START_CONCURRENCY,
    progress: bool = True,
) -> list[Device]:
    """``n`` Unix-port devices on ``broker``, all in ``group``, each named ``<prefix>-<k>``.

    At most ``concurrency`` boot at once; a progress bar on stderr. If one
    fails to start, those already started are stopped and the error raised.
    """
    if n < 1:
        raise ValueError(f"devices: {n}: need at least 1")
    prefix = f"fleet-{secrets.token_hex(2)}"
    extra: dict[str, Any] = dict(config or {})
    if group:
        extra["groups"] = [*extra.get("groups", []), group]
    # Compiled once before the parallel starts, which then find it cached (if it
    # cannot be, each device runs from source, and open_device says so).
    with contextlib.suppress(firmware_build.BuildError):
        firmware_build.build(find_micropython(micropython))
    bar = Progress(n, f"start {n} devices") if progress else None
    devices: list[Device] = []
    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="fleet-start") as pool:
        futures: list[Future[Device]] = [
            pool.submit(
                open_device,
                "unix",
                board,
                broker,
                micropython,
                heapsize,
                device_id=f"{prefix}-{k:03d}",
                config=extra,
            )
            for k in range(n)
        ]
        error: BaseException | None = None
        for f in futures:
            try:
                devices.append(f.result())
            except BaseException as e:  # stop the others, then raise the first
                error = error or e
            if bar:
                bar.update()
    if bar:
        bar.close()
    if error is not None:
        for d in devices:
            d.close()
        raise error
    return devices


@dataclass(frozen=True)
class ProcUsage:
    """One process's resident memory (all, and its own: anonymous pages) and CPU time so far."""

    pid: int
    rss_kib: int
    anon_kib: int  # not shared with the other devices (the interpreter's code pages are)
    cpu_s: float

    @classmethod
    def read(cls, pid: int) -> ProcUsage:
        kib = {}
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "RssAnon:")):
                    kib[line.split(":")[0]] = int(line.split()[1])
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        # Fields after the command name (which may hold spaces) in parentheses.
        rest = stat[stat.rindex(")") + 2 :].split()
        utime, stime = int(rest[11]), int(rest[12])
        return cls(pid, kib.get("VmRSS", 0), kib.get("RssAnon", 0), (utime + stime) / os.sysconf("SC_CLK_TCK"))


def usage(devices: list[Device]) -> list[ProcUsage]:
    """RSS and CPU of every Unix-port device's process (boards are skipped)."""
    out = []
    for d in devices:
        if d.unix is not None and d.unix.proc is not None and d.unix.alive:
            out.append(ProcUsage.read(d.unix.proc.pid))
    return out
