"""Benchmark: stock vs tuned Mosquitto x link profile x schedule, each journey beside its own floor.

For every broker (stock: Nagle on, as users run it; tuned: set_tcp_nodelay),
every link (``loopback``: no namespace; the packet-level profiles need root)
and every schedule (closed loop; open loop at 10 and 100 commands/s), one
Unix-port device runs MQTT journeys, and two floors are measured just before,
across the same link and on the same schedule (a closed-loop floor flatters an
open-loop journey): the echo floor (the journey's route with a paho responder
in the device's place, ``floor.echo_across``) and the self floor (a paho
client publishing to itself, one pass through the broker). Behind a delaying
link the forwarder records what it did to each packet, so each journey (and
each floor round trip) is split into the link's delay of its two packets and
what the rest of the path added: paired per journey, where two medians of
separately drawn delays differ by a millisecond from sampling alone. Targets
checked at the end: on ``lan`` the journey within 2x its echo floor at p50 and
p99; on a Wi-Fi profile the journey adding at most 1 ms to the link's own
delay at p50; stock within 1.5x tuned at p50 and p99.

    python benchmarks/matrix.py [--count 60] [--links loopback,lan,...] [--quick]
"""

from __future__ import annotations

import argparse
import sys
from contextlib import ExitStack
from dataclasses import dataclass, field

from host_harness.broker.start import start_broker
from host_harness.core import diagnose, latency
from host_harness.core.results import JourneyRun
from host_harness.core.table import render
from host_harness.dut.device import open_device
from host_harness.link.mqtt_client import HostMqtt
from host_harness.measure.clocksync import clock_for
from host_harness.measure.floor import echo_across, floor_across, floor_ms, message
from host_harness.measure.journeys import Journeys
from host_harness.measure.load import closed_loop, open_loop_mqtt
from host_harness.measure.progress import Progress
from host_harness.netfault import attach, packetlog
from host_harness.netfault.links import Link
from host_harness.netfault.packetlog import crossing

BROKERS = {"stock": "mosquitto", "tuned": "mosquitto-tuned"}
LINKS = ("loopback", "lan", "wifi-near", "wifi-wall", "wifi-lossy")
SCHEDULES: tuple[tuple[str, float | None], ...] = (("closed", None), ("open 10/s", 10.0), ("open 100/s", 100.0))
LAN_X_FLOOR = 2.0  # lan: journey <= 2x its echo floor, p50 and p99
WIFI_ADD_MS = 1.0  # Wi-Fi: p50 of (journey - the link's delay of its two packets) <= 1 ms
STOCK_X_TUNED = 1.5  # stock <= 1.5x tuned, p50 and p99


@dataclass
class Row:
    broker: str
    link: str
    schedule: str
    journeys: JourneyRun
    echo: list[float]  # echo floor round trips, ms
    self_floor: list[float]
    split: Split | None = None  # behind a delaying link: the journeys split at the link
    echo_split: Split | None = None
    self_split: Split | None = None
    together: packetlog.Together = field(default_factory=lambda: packetlog.Together(0, 0, 0))  # commands' crossing

    @property
    def where(self) -> str:
        return f"{self.broker}, {self.link}, {self.schedule}"


def measure(broker: str, link_name: str, count: int, state_qos: int | None = None) -> list[Row]:
    rows: list[Row] = []
    with ExitStack() as stack:
        link = stack.enter_context(attach.open_link(link_name, seed=5, log=True)) if link_name != "loopback" else None
        packets = link.packets if link else None
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
        prefix = link.prefix() if link else []
        echo = stack.enter_context(echo_across(prefix, dev_info, f"bench/echo-{mq.client_id}"))
        floor_ms(mq, 10, progress=False, echo=echo, tag="warm-up")
        js = Journeys(dev, mq, timeout=10)
        clock = clock_for(dev, mq)[0]
        closed_loop(js, "mqtt", 10, clock)  # warm-up
        for name, rate in SCHEDULES:
            if packets:
                packets.skip()
            tag = name.replace(" ", "").replace("/", "")  # closed, open10s, open100s
            self_floor = floor_across(prefix, dev_info, count, rate, tag)
            self_packets = packets.read() if packets else []
            echo_ms = floor_ms(mq, count, progress=False, rate=rate, echo=echo, tag=tag)
            echo_packets = packets.read() if packets else []
            bar = Progress(count, f"{broker} {link_name} {name}")
            run: JourneyRun = (
                closed_loop(js, "mqtt", count, clock, progress=bar)
                if rate is None
                else open_loop_mqtt(js, rate, count, clock, progress=bar)
            )
            bar.close()
            row = Row(broker, link_name, name, run, echo_ms, self_floor)
            if packets:
                js_packets = packets.read()
                row.split = Split(
                    [j.e2e_ms for j in run.journeys],
                    [crossing(js_packets, packetlog.quoted(j.id), True) for j in run.journeys],
                )
                row.together = packetlog.together(js_packets, [packetlog.quoted(j.id) for j in run.journeys])
                row.echo_split = floor_split(echo_ms, echo_packets, tag, out_down=True)
                row.self_split = floor_split(self_floor, self_packets, tag, out_down=False)
            rows.append(row)
    return rows


class Split:
    """Round trips split into the link's delay of their two packets and the rest, paired per round trip."""

    def __init__(self, totals_ms: list[float], crossings: list[packetlog.Crossing | None]) -> None:
        pairs = [(t, c) for t, c in zip(totals_ms, crossings, strict=True) if c is not None]
        if not pairs:
            raise RuntimeError("the link's packet log holds none of the measured messages")
        self.found = len(pairs)
        self.of = len(totals_ms)
        self.link = latency.summarize([c.link_ms for _, c in pairs])
        self.added = latency.summarize([t - c.link_ms for t, c in pairs])
        self.queued = sum(1 for _, c in pairs if c.queued)

    def added_p50(self) -> str:
        found = "" if self.found == self.of else f" ({self.found} of {self.of})"
        return f"{self.added.p50:+.3f}{found}"


def floor_split(ms: list[float], packets: list[packetlog.Packet], tag: str, out_down: bool) -> Split:
    """A floor's round trips split at the link, message i found by its text (``floor.message``);
    ``out_down``: it goes out towards the device (the echo floor) or from it (the self floor)."""
    return Split(ms, [crossing(packets, message(i, tag).encode(), out_down) for i in range(len(ms))])


def _config(link: Link | None, state_qos: int | None) -> dict[str, object]:
    """The device's config: what the link implies, and the QoS of its reports if asked."""
    config: dict[str, object] = attach.device_config(link)
    if state_qos is not None:
        config["mqtt"] = {"state_qos": state_qos}
    return config


def tables(rows: list[Row]) -> tuple[list[list[object]], list[list[object]]]:
    """The journeys beside their floors, and (behind delaying links) split at the link."""
    main: list[list[object]] = []
    split: list[list[object]] = []
    for r in rows:
        t, e, f = r.journeys.total(), latency.summarize(r.echo), latency.summarize(r.self_floor)
        main.append(
            [r.broker, r.link, r.schedule, len(r.journeys.journeys), len(r.journeys.lost), t.p50, t.p99,
             e.p50, e.p99, f"{t.p50 / e.p50:.2f}x", f"{t.p99 / e.p99:.2f}x", f.p50]
        )  # fmt: skip
        if r.split and r.echo_split and r.self_split:
            split.append(
                [r.broker, r.link, r.schedule, r.split.link.p50, r.split.added_p50(), r.split.queued,
                 r.together.shared, r.echo_split.added_p50(), r.self_split.added_p50()]
            )  # fmt: skip
    return main, split


def targets(rows: list[Row]) -> tuple[list[list[object]], list[str]]:
    """The stock/tuned ratios per link and schedule, and one line per target missed."""
    by = {(r.broker, r.link, r.schedule): r for r in rows}
    ratios: list[list[object]] = []
    missed: list[str] = []
    for (b, link, sched), r in by.items():
        t, e = r.journeys.total(), latency.summarize(r.echo)
        if r.journeys.lost:
            missed.append(f"{r.where}: {len(r.journeys.lost)} lost")
        if link == "lan" and (t.p50 > LAN_X_FLOOR * e.p50 or t.p99 > LAN_X_FLOOR * e.p99):
            missed.append(
                f"{r.where}: journey {t.p50:.3f}/{t.p99:.3f} ms > {LAN_X_FLOOR:g}x"
                f" echo floor {e.p50:.3f}/{e.p99:.3f} ms"
            )
        if link.startswith("wifi") and r.split and r.split.added.p50 > WIFI_ADD_MS:
            missed.append(f"{r.where}: the journey adds {r.split.added.p50:+.3f} ms at p50 to the link's delay")
        if b == "stock" and ("tuned", link, sched) in by:
            u = by[("tuned", link, sched)].journeys.total()
            x50, x99 = t.p50 / u.p50, t.p99 / u.p99
            ratios.append([link, sched, f"{x50:.2f}x", f"{x99:.2f}x"])
            if x50 > STOCK_X_TUNED or x99 > STOCK_X_TUNED:
                why = diagnose.batching(*r.together)
                missed.append(
                    f"{link}, {sched}: stock/tuned {x50:.2f}x p50, {x99:.2f}x p99 > {STOCK_X_TUNED:g}x"
                    + (f"\n    {why.line()}" if why else "")
                )
    return ratios, missed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=60, help="journeys (and floor round trips) per row (default 60)")
    ap.add_argument("--links", default=",".join(LINKS), help=f"comma-separated (default {','.join(LINKS)})")
    ap.add_argument("--quick", action="store_true", help="30 per row, loopback and lan only")
    ap.add_argument("--state-qos", type=int, choices=(0, 1), help="the QoS of the device's reports (mqtt.state_qos)")
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
    rows: list[Row] = []
    for link in links:
        for broker in BROKERS:
            rows += measure(broker, link, count, a.state_qos)
    main_rows, split_rows = tables(rows)
    print(
        render(
            ["broker", "link", "schedule", "n", "lost", "e2e p50", "e2e p99", "echo p50", "echo p99",
             "p50 x echo", "p99 x echo", "self p50"],
            main_rows,
        )
    )  # fmt: skip
    print(
        "ms; echo: the journey's route with a paho responder in the device's place (host -> broker -> responder"
        "\n-> broker -> host); self: a paho client publishing to itself (one pass through the broker); each"
        "\nacross the same link, on the same schedule, measured just before the journeys"
    )
    if split_rows:
        print()
        print(
            render(
                ["broker", "link", "schedule", "link p50", "journey adds p50", "queued", "sent together",
                 "echo adds p50", "self adds p50"],
                split_rows,
            )
        )  # fmt: skip
        print(
            "ms; link: the delay the link gave each journey's two packets (command in, report out), from the"
            "\nforwarder's own record; adds: each round trip minus its two packets' delays, paired; queued:"
            "\njourneys with a packet that left behind an earlier one of its flow; sent together: commands the"
            "\nbroker held back and sent in one TCP segment with an earlier one (its Nagle; see lightctl's doctor)"
        )
    ratios, missed = targets(rows)
    print()
    print(render(["link", "schedule", "stock/tuned p50", "stock/tuned p99"], ratios))
    print("targets: " + ("all kept" if not missed else f"{len(missed)} missed"))
    for m in missed:
        print(f"  missed: {m}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
