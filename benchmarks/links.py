"""Benchmark: link profiles, asked vs measured, and MQTT journeys behind each (root).

1. per profile, real pings from the device's namespace (parallel flows):
   round-trip p50/p90/p99 measured beside the profile's published figures,
   and the loss rate;
2. per profile, closed-loop MQTT journeys of a Unix-port device behind the
   link: end-to-end and the two network hops, the verdict against the board's
   budget for that link, and the diagnosis when it breaks.

    python benchmarks/links.py [--link lan,wifi-near,...] [--pings 3000] [--count 100]
"""

from __future__ import annotations

import argparse
import random
import sys

from host_harness.broker.start import start_broker
from host_harness.core.budgets import evaluate, for_board
from host_harness.core.results import JourneyRun
from host_harness.core.table import render
from host_harness.dut.boards import load as load_board
from host_harness.dut.device import open_device
from host_harness.link.mqtt_client import HostMqtt
from host_harness.measure.clocksync import clock_for
from host_harness.measure.journeys import Journeys
from host_harness.measure.load import closed_loop
from host_harness.netfault import attach
from host_harness.netfault.probe import ping_rtts, quantile
from host_harness.netfault.profiles import PROFILES, Profile
from host_harness.netfault.tundelay import Quantiles

# Mosquitto with TCP_NODELAY: the link's own effects, without the 40 ms Nagle stall a stock
# Mosquitto can add on top (that stall is produced and diagnosed on its own).
BROKER = "mosquitto-tuned"


def asked(p: Profile) -> dict[str, float]:
    """The round trip the profile asks for (power save: the awake one plus a wait for a wake-up)."""
    if not p.rtt_ms:
        return {}
    if not p.wake_ms:
        return p.asked()
    rng, q = random.Random(1), Quantiles(p.rtt_ms)
    model = [q.draw(rng) + p.wake_ms * rng.random() for _ in range(100_000)]
    return {m: quantile(model, float(m[1:]) / 100) for m in ("p50", "p90", "p99")}


def pings(name: str, n: int) -> list[object]:
    p = PROFILES[name]
    slowest = dict(p.rtt_ms or ((1.0, 1.0),))[1.0] + (p.wake_ms or 0.0)
    interval = max(0.02, slowest / 1000.0 + 0.01)
    flows = 30
    with attach.open_link(name, seed=11) as link:
        rtts, sent = ping_rtts(link, flows, max(1, n // flows), interval)
    want = asked(p)
    row: list[object] = [name, sent, f"{100.0 * (1 - len(rtts) / sent):.1f} %"]
    for m in ("p50", "p90", "p99"):
        got = quantile(rtts, float(m[1:]) / 100)
        row += [f"{want[m]:.1f}" if m in want else "-", f"{got:.2f}"]
    return row


def journeys(name: str, count: int) -> tuple[JourneyRun, list[str]]:
    with (
        attach.open_link(name, seed=5) as link,
        start_broker(BROKER, **attach.broker_options(link, BROKER)) as broker,
    ):
        dev = open_device("unix", "unix", attach.device_broker(link, broker), prefix=link.prefix())
        try:
            dev.wait_mqtt()
            mq = HostMqtt(broker.info, "bench").connect()
            try:
                attach.wait_across(dev, mq)
                run = closed_loop(Journeys(dev, mq, timeout=10), "mqtt", count, clock_for(dev, mq)[0])
            finally:
                mq.close()
        finally:
            dev.close()
    v = evaluate(run, for_board(load_board("unix"), link=name).for_kind("mqtt"))
    return run, ["kept" if v.ok else "BROKEN", *v.diagnosis]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--link", default=",".join(PROFILES), help="profiles, comma-separated (default all)")
    ap.add_argument("--pings", type=int, default=3000, help="round trips per profile (default 3000)")
    ap.add_argument("--count", type=int, default=100, help="MQTT journeys per profile (default 100)")
    args = ap.parse_args()
    names = [n.strip() for n in args.link.split(",") if n.strip()]
    for n in names:
        attach.profile(n)
    reason = attach.unavailable_reason()
    if reason:
        print(f"skipped: {reason}", file=sys.stderr)
        return 2
    rows = [pings(n, args.pings) for n in names]
    head = ["profile", "pings", "lost"] + [f"{m} {w}" for m in ("p50", "p90", "p99") for w in ("asked", "got")]
    print(render(head, rows))
    jrows: list[list[object]] = []
    notes: list[str] = []
    for n in names:
        run, verdict = journeys(n, args.count)
        t, down, up = run.total(), run.hop("host_to_device"), run.hop("device_to_host")
        jrows.append(
            [n, len(run.journeys), len(run.lost), t.p50, t.p99, down.p50, down.p99, up.p50, up.p99, verdict[0]]
        )
        notes += [f"{n}: {line}" for line in verdict[1:]]
    print()
    print(
        render(
            [
                "MQTT journey (ms)",
                "n",
                "lost",
                "e2e p50",
                "e2e p99",
                "down p50",
                "down p99",
                "up p50",
                "up p99",
                "budget",
            ],
            jrows,
        )
    )
    for line in notes:
        print(f"  diagnosis {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
