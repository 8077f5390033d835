"""Benchmark: the serial hop through a labgrid place, beside the direct pty, in one run.

One Unix-port device on a pty, pinged over serial (``ping`` -> ``pong``, host
send to host receive) through, in turn:

1. its pty directly (the floor);
2. ser2net with and without ``tcp(nodelay)`` and ``chardelay`` (``tcp`` with
   ``chardelay`` on are ser2net's defaults: what labgrid's exporter runs);
3. a labgrid place: ``labgrid:PLACE`` through a real coordinator and exporter
   on loopback (the exporter starts ser2net itself); then once more with the
   harness's TCP_QUICKACK off (host_harness/link/quickack.py).

Each ser2net row is measured with the harness's quick ACKs on, as it runs.

Needs root (the exporter's port is linked under /dev), ser2net and labgrid.

    python benchmarks/labgrid_serial.py [--count 300]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from host_harness.core.table import render
from host_harness.dut import boards, labgrid_place
from host_harness.dut.device import Device, unix_config
from host_harness.dut.labgrid_lab import LocalLab, _stop, _wait, find_ser2net, free_tcp_port
from host_harness.dut.unix_device import UnixDevice
from host_harness.link import quickack
from host_harness.link.serial_link import SerialLink


def pings(spec: str, n: int, warmup: int = 10) -> list[float]:
    dev = Device(SerialLink(spec, name="bench"), boards.load("unix"))
    try:
        dev.wait_boot(10)
        for _ in range(warmup):
            dev.ping()
        out = []
        for _ in range(n):
            t, ev = dev.ping()
            out.append((ev.host_ns - t) / 1e6)
        return out
    finally:
        dev.close()


def ser2net(device: str, workdir: Path, nodelay: bool, chardelay: bool) -> tuple[subprocess.Popen[bytes], str]:
    port = free_tcp_port()
    accepter = f"telnet(rfc2217),tcp{'(nodelay)' if nodelay else ''},127.0.0.1,{port}"
    conf = workdir / f"ser2net-{port}.yaml"
    text = f"connection: &con0\n  accepter: {accepter}\n  connector: serialdev,{device},115200n81,local\n"
    if not chardelay:
        text += "  options:\n    chardelay: false\n"
    conf.write_text(text)
    proc = subprocess.Popen(
        [str(find_ser2net()), "-n", "-d", "-c", str(conf), "-P", str(workdir / f"ser2net-{port}.pid")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )

    def listening() -> bool:
        import socket

        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return True
        except OSError:
            return False

    _wait(listening, 10, f"ser2net on 127.0.0.1:{port}", proc)
    return proc, f"rfc2217://127.0.0.1:{port}{labgrid_place.URL_OPTIONS}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=300, help="pings per path (default 300)")
    args = ap.parse_args()
    if find_ser2net() is None:
        print("ser2net is not installed", file=sys.stderr)
        return 2
    unix = UnixDevice(unix_config(boards.load("unix"), None))
    results: list[tuple[str, list[float]]] = []
    with tempfile.TemporaryDirectory(prefix="lightctl-lg-bench-") as tmp:
        work = Path(tmp)
        lab: LocalLab | None = None
        try:
            pty = unix.start()
            results.append(("pty, direct (floor)", pings(pty, args.count)))
            for nodelay, chardelay in ((True, False), (False, False), (True, True), (False, True)):
                label = f"ser2net: tcp{'(nodelay)' if nodelay else ''}, chardelay {'on' if chardelay else 'off'}"
                proc, url = ser2net(pty, work, nodelay, chardelay)
                try:
                    results.append((label, pings(url, args.count)))
                finally:
                    _stop(proc)
            lab = LocalLab(work / "lab")
            lab.export("bench", pty)
            lab.start_coordinator()
            lab.start_exporter()
            lab.create_place("bench", "bench")
            labgrid_place.set_coordinator(lab.address)
            results.append(("labgrid:PLACE (exporter's ser2net)", pings("labgrid:bench", args.count)))
            quickack.enabled = False
            results.append(("labgrid:PLACE, client without TCP_QUICKACK", pings("labgrid:bench", args.count)))
        finally:
            if lab is not None:
                lab.stop()
            unix.cleanup()
    floor = statistics.median(results[0][1])
    rows = []
    for label, ms in results:
        q = statistics.quantiles(ms, n=100)
        rows.append(
            [label, len(ms), statistics.median(ms), q[89], q[98], max(ms), f"{statistics.median(ms) / floor:.1f}x"]
        )
    print(f"serial ping round trip (host send -> pong received), {args.count} pings per path")
    print(render(["path", "n", "p50 ms", "p90 ms", "p99 ms", "max ms", "p50 / floor"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
