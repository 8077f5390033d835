"""Benchmark: MQTT journeys on a stock Mosquitto beside the harness's tuned one.

The harness starts Mosquitto with ``set_tcp_nodelay true``; users run it as
shipped (``mosquitto -p PORT``: Nagle on). Both brokers run at once, one
Unix-port device on each, and the same schedules run on both in one run:
closed loop and open loop at 10 and 100 commands/s. The floor is a paho
client publishing to itself through each broker.

    python benchmarks/stock_broker.py [--count 300] [--rates 10,100] [--command-qos 0]
"""

from __future__ import annotations

import argparse
import sys

from host_harness.broker.info import BrokerInfo
from host_harness.broker.start import start_broker
from host_harness.broker.stock import StockMosquitto
from host_harness.core import latency
from host_harness.core.results import JourneyRun
from host_harness.core.table import render
from host_harness.dut.device import open_device
from host_harness.link.mqtt_client import HostMqtt
from host_harness.measure.clocksync import clock_for
from host_harness.measure.floor import floor_ms
from host_harness.measure.journeys import Journeys
from host_harness.measure.load import closed_loop, open_loop_mqtt
from host_harness.measure.progress import Progress


class QosJourneys(Journeys):
    """Journeys whose commands are published at a given QoS (Home Assistant
    publishes at the QoS of the discovery config: 1)."""

    def __init__(self, *a: object, command_qos: int = 0, **kw: object) -> None:
        super().__init__(*a, **kw)  # type: ignore[arg-type]
        self.command_qos = command_qos
        mq = self.mqtt
        assert mq is not None
        orig = mq.publish

        def publish(topic: str, payload: str | bytes, qos: int = 0, retain: bool = False) -> int:
            return orig(topic, payload, qos=max(qos, command_qos), retain=retain)

        mq.publish = publish  # type: ignore[method-assign]


def measure(
    info: BrokerInfo, label: str, count: int, rates: list[float], qos: int, heapsize: str, quickack: bool
) -> list[list[object]]:
    rows: list[list[object]] = []
    dev = open_device("unix", "unix", info, heapsize=heapsize, config={"mqtt": {"quickack": quickack}})
    try:
        dev.wait_mqtt()
        mq = HostMqtt(info, "bench").connect()
        try:
            js = QosJourneys(dev, mq, timeout=10, command_qos=qos)
            clock = clock_for(dev, mq)[0]
            closed_loop(js, "mqtt", 30, clock)  # warm-up
            fl = latency.summarize(floor_ms(mq, count, progress=False))
            rows.append([label, "floor", count, 0, fl.p50, fl.p99, "", ""])
            runs: list[tuple[str, JourneyRun]] = []
            bar = Progress(count, f"{label} closed")
            runs.append(("closed", closed_loop(js, "mqtt", count, clock, progress=bar)))
            bar.close()
            for rate in rates:
                bar = Progress(count, f"{label} {rate:g}/s")
                runs.append((f"open {rate:g}/s", open_loop_mqtt(js, rate, count, clock, progress=bar)))
                bar.close()
            for name, run in runs:
                t = run.total()
                h = run.hop("host_to_device")
                rows.append([label, name, len(run.journeys), len(run.lost), t.p50, t.p99, h.p50, h.p99])
        finally:
            mq.close()
    finally:
        dev.close()
    return rows


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=300)
    ap.add_argument("--rates", default="10,100")
    ap.add_argument("--command-qos", type=int, default=0, choices=(0, 1))
    ap.add_argument("--heapsize", default="64k")
    ap.add_argument("--no-quickack", action="store_true", help="device does without TCP_QUICKACK, as on lwIP")
    args = ap.parse_args()
    rates = [float(x) for x in args.rates.split(",") if x]
    rows: list[list[object]] = []
    with start_broker("mosquitto-tuned") as tuned, StockMosquitto() as stock:
        print(f"tuned: {tuned.describe()}\nstock: {stock.describe()}", file=sys.stderr)
        rows += measure(tuned.info, "tuned", args.count, rates, args.command_qos, args.heapsize, not args.no_quickack)
        rows += measure(stock.info, "stock", args.count, rates, args.command_qos, args.heapsize, not args.no_quickack)
    qa = "without TCP_QUICKACK (as on lwIP)" if args.no_quickack else "with TCP_QUICKACK"
    print(f"\ncommands at QoS {args.command_qos}; device state reports at QoS 1; device {qa}")
    print(render(["broker", "schedule", "n", "lost", "e2e p50", "e2e p99", "h->d p50", "h->d p99"], rows))
    by = {(r[0], r[1]): r for r in rows}
    ratios = []
    for (b, s), r in by.items():
        if b == "stock" and s != "floor":
            t = by[("tuned", s)]
            ratios.append([s, f"{r[4] / t[4]:.2f}x", f"{r[5] / t[5]:.2f}x"])
    print(render(["schedule", "stock/tuned e2e p50", "stock/tuned e2e p99"], ratios))
    return 0


if __name__ == "__main__":
    sys.exit(main())
