"""Benchmark: stock vs tuned Mosquitto x link profile x schedule, each journey beside its own floor.

For every broker (stock: Nagle on, as users run it; tuned: set_tcp_nodelay),
every link (``loopback``: no namespace; the packet-level profiles need root)
and every schedule (closed loop; open loop at 10 and 100 commands/s), one
Unix-port device runs MQTT journeys, and the floor (a paho client publishing
to itself through the same broker, across the same link, on the same
schedule: a closed-loop floor flatters an open-loop journey) is measured just
before. Targets checked at the end: on ``lan`` the journey within 2x its floor
at p50 and p99; on a Wi-Fi profile the journey adding at most 1 ms to the
floor at p50; stock within 1.5x tuned at p50 and p99.

    python benchmarks/matrix.py [--count 60] [--links loopback,lan,...] [--quick]
"""

from __future__ import annotations

import argparse
import sys
from contextlib import ExitStack

from host_harness.broker.start import start_broker
from host_harness.core import latency
from host_harness.core.results import JourneyRun
from host_harness.core.table import render
from host_harness.dut.device import open_device
from host_harness.link.mqtt_client import HostMqtt
from host_harness.measure.clocksync import clock_for
from host_harness.measure.floor import floor_across
from host_harness.measure.journeys import Journeys
from host_harness.measure.load import closed_loop, open_loop_mqtt
from host_harness.measure.progress import Progress
from host_harness.netfault import attach
from host_harness.netfault.links import Link

BROKERS = {"stock": "mosquitto", "tuned": "mosquitto-tuned"}
LINKS = ("loopback", "lan", "wifi-near", "wifi-wall", "wifi-lossy")
SCHEDULES: tuple[tuple[str, float | None], ...] = (("closed", None), ("open 10/s", 10.0), ("open 100/s", 100.0))
LAN_X_FLOOR = 2.0  # lan: journey <= 2x its floor, p50 and p99
WIFI_ADD_MS = 1.0  # Wi-Fi: journey p50 - floor p50 <= 1 ms
STOCK_X_TUNED = 1.5  # stock <= 1.5x tuned, p50 and p99


def measure(broker: str, link_name: str, count: int, state_qos: int | None = None) -> list[list[object]]:
    rows: list[list[object]] = []
    with ExitStack() as stack:
        link = stack.enter_context(attach.open_link(link_name, seed=5)) if link_name != "loopback" else None
        b = stack.enter_context(start_broker(BROKERS[broker], **attach.broker_options(link, BROKERS[broker])))
        dev_info = attach.device_broker(link, b)
        dev = open_device(
            "unix",
            "unix",
            dev_info,
            config=_config(link, state_qos),
            prefix=link.prefix() if link else None,
        )
        stack.callback(dev.close)
        dev.wait_mqtt()
        mq = HostMqtt(b.info, "bench").connect()
        stack.callback(mq.close)
        if link is not None:
            attach.wait_across(dev, mq)
        js = Journeys(dev, mq, timeout=10)
        clock = clock_for(dev, mq)[0]
        closed_loop(js, "mqtt", 10, clock)  # warm-up
        for name, rate in SCHEDULES:
            fl = latency.summarize(floor_across(link.prefix() if link else [], dev_info, count, rate))
            bar = Progress(count, f"{broker} {link_name} {name}")
            run: JourneyRun = (
                closed_loop(js, "mqtt", count, clock, progress=bar)
                if rate is None
                else open_loop_mqtt(js, rate, count, clock, progress=bar)
            )
            bar.close()
            t = run.total()
            rows.append(
                [
                    broker,
                    link_name,
                    name,
                    len(run.journeys),
                    len(run.lost),
                    t.p50,
                    t.p99,
                    fl.p50,
                    fl.p99,
                    f"{t.p50 / fl.p50:.2f}x",
                    f"{t.p99 / fl.p99:.2f}x",
                    f"{t.p50 - fl.p50:+.3f}",
                ]
            )
    return rows


def _config(link: Link | None, state_qos: int | None) -> dict[str, object]:
    """The device's config: what the link implies, and the QoS of its reports if asked."""
    config: dict[str, object] = attach.device_config(link)
    if state_qos is not None:
        config["mqtt"] = {"state_qos": state_qos}
    return config


def targets(rows: list[list[object]]) -> tuple[list[list[object]], list[str]]:
    """The stock/tuned ratios per link and schedule, and one line per target missed."""
    by = {(r[0], r[1], r[2]): r for r in rows}
    ratios: list[list[object]] = []
    missed: list[str] = []
    for (b, link, sched), r in by.items():
        e50, e99, f50, f99 = (float(x) for x in (r[5], r[6], r[7], r[8]))
        where = f"{b}, {link}, {sched}"
        if int(str(r[4])):
            missed.append(f"{where}: {r[4]} lost")
        if link == "lan" and (e50 > LAN_X_FLOOR * f50 or e99 > LAN_X_FLOOR * f99):
            missed.append(f"{where}: journey {e50:.3f}/{e99:.3f} ms > {LAN_X_FLOOR:g}x floor {f50:.3f}/{f99:.3f} ms")
        if link.startswith("wifi") and e50 - f50 > WIFI_ADD_MS:
            missed.append(f"{where}: journey p50 adds {e50 - f50:.3f} ms to the floor's {f50:.3f} ms")
        if b == "stock" and ("tuned", link, sched) in by:
            t = by[("tuned", link, sched)]
            x50, x99 = e50 / float(str(t[5])), e99 / float(str(t[6]))
            ratios.append([link, sched, f"{x50:.2f}x", f"{x99:.2f}x"])
            if x50 > STOCK_X_TUNED or x99 > STOCK_X_TUNED:
                missed.append(f"{link}, {sched}: stock/tuned {x50:.2f}x p50, {x99:.2f}x p99 > {STOCK_X_TUNED:g}x")
    return ratios, missed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=60, help="journeys (and floor round trips) per row (default 60)")
    ap.add_argument("--links", default=",".join(LINKS), help=f"comma-separated (default {','.join(LINKS)})")
    ap.add_argument("--quick", action="store_true", help="30 per row, loopback and lan only")
    ap.add_argument(
        "--state-qos", type=int, choices=(0, 1), help="the QoS of the device's reports (mqtt.state_qos)"
    )
    a = ap.parse_args(argv)
    links = ["loopback", "lan"] if a.quick else [x.strip() for x in a.links.split(",") if x.strip()]
    count = 30 if a.quick else a.count
    for n in links:
        if n != "loopback":
            attach.profile(n)  # an unknown name: a clear error before anything starts
    reason = attach.unavailable_reason()
    if reason and any(n != "loopback" for n in links):
        print(f"link rows skipped: {reason}", file=sys.stderr)
        links = [n for n in links if n == "loopback"]
    rows: list[list[object]] = []
    for link in links:
        for broker in BROKERS:
            rows += measure(broker, link, count, a.state_qos)
    print(
        render(
            [
                "broker",
                "link",
                "schedule",
                "n",
                "lost",
                "e2e p50",
                "e2e p99",
                "floor p50",
                "floor p99",
                "p50 x floor",
                "p99 x floor",
                "p50 - floor",
            ],
            rows,
        )
    )
    ratios, missed = targets(rows)
    print()
    print(render(["link", "schedule", "stock/tuned p50", "stock/tuned p99"], ratios))
    print(
        "\nms; floor: a paho client publishing to itself through the same broker, across the same link, same schedule"
    )
    print("targets: " + ("all kept" if not missed else f"{len(missed)} missed"))
    for m in missed:
        print(f"  missed: {m}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
