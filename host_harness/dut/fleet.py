"""Many Unix-port devices at once: started with bounded concurrency, their RAM and CPU read from /proc.

Each device is its own MicroPython process (a 64 KiB heap plus the
interpreter) under its own pseudo-terminal, configured into the same group.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from dataclasses import dataclass
from typing import Any

from host_harness.broker.info import BrokerInfo
from host_harness.dut import boards
from host_harness.dut.device import Device, unix_config
from host_harness.dut.unix_device import DEFAULT_HEAPSIZE, UnixDevice, find_micropython
from host_harness.image import firmware_build
from host_harness.link.console_mux import ConsoleMux
from host_harness.link.serial_link import SerialLink
from host_harness.measure.progress import Progress

START_CONCURRENCY = 8  # devices booting at once: each boot is CPU-bound for ~0.1 s


def group_name() -> str:
    """A group name no other run on the same broker uses."""
    return f"room-{secrets.token_hex(3)}"


def start_unix_devices(
    n: int,
    broker: BrokerInfo,
    board: str = "unix",
    group: str | None = None,
    micropython: str | None = None,
    heapsize: str | None = DEFAULT_HEAPSIZE,
    config: dict[str, Any] | None = None,
    concurrency: int = START_CONCURRENCY,
    progress: bool = True,
    one_reader: bool = True,
) -> list[Device]:
    """``n`` Unix-port devices on ``broker``, all in ``group``, each named ``<prefix>-<k>``.

    Spawned in batches of ``concurrency`` and each batch waited for (booted,
    answering on its console) before the next; a progress bar on stderr. All
    from the calling thread, without worker threads: a child dies with the
    thread that spawned it (host_harness/children.py). ``one_reader``: all
    consoles read by one thread (link.console_mux), not a pyserial thread
    each. If one fails to start,
    those already started are stopped and the error raised.
    """
    if n < 1:
        raise ValueError(f"devices: {n}: need at least 1")
    bdef = boards.load(board)
    prefix = f"fleet-{secrets.token_hex(2)}"
    extra: dict[str, Any] = dict(config or {})
    if group:
        extra["groups"] = [*extra.get("groups", []), group]
    # Compiled once before the starts, which then find it cached (if it cannot
    # be, each device runs from source, and its build_note says so).
    with contextlib.suppress(firmware_build.BuildError):
        firmware_build.build(find_micropython(micropython))
    bar = Progress(n, f"start {n} devices") if progress else None
    devices: list[Device] = []
    mux = ConsoleMux() if one_reader else None
    try:
        for first in range(0, n, max(1, concurrency)):
            batch: list[UnixDevice] = []
            try:
                for k in range(first, min(n, first + max(1, concurrency))):
                    cfg = unix_config(bdef, broker, f"{prefix}-{k:03d}", extra=extra)
                    u = UnixDevice(cfg, micropython, heapsize)
                    batch.append(u)
                    u.start()
                while batch:
                    u = batch[0]
                    dev = Device(mux.attach(u.port) if mux else SerialLink(u.port, name="unix device"), bdef, u)
                    batch.pop(0)
                    devices.append(dev)
                    dev.wait_boot()
                    if bar:
                        bar.update()
            finally:
                for u in batch:
                    u.cleanup()
    except BaseException:
        for d in devices:
            d.close()
        if mux:
            mux.close_if_unused()
        raise
    finally:
        if bar:
            bar.close()
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
