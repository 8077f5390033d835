"""Benchmark: the MQTT light journey beside the broker's floor, in one run.

The floor is a paho client publishing to a topic it subscribes to, through
the same broker: no device at all. The journey is the main job's: command
published -> device applies -> state confirmed on the host.

    python benchmarks/mqtt_floor.py [--count 1000] [--broker URL] [--heapsize 64k]
"""

from __future__ import annotations

import argparse
import sys

from host_harness import stats
from host_harness.broker import start_broker
from host_harness.device import open_device
from host_harness.floor import floor_ms
from host_harness.journey import Journeys
from host_harness.mqtt_client import HostMqtt
from host_harness.progress import Progress
from host_harness.table import render


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--broker", default=None)
    ap.add_argument("--heapsize", default="64k")
    args = ap.parse_args()
    with start_broker(args.broker) as broker:
        print(f"broker: {broker.describe()}")
        dev = open_device("unix", "unix", broker.info, heapsize=args.heapsize)
        try:
            dev.wait_mqtt()
            mq = HostMqtt(broker.info, "bench").connect()
            js = Journeys(dev, mq)
            for i in range(50):
                js.via_mqtt("ON" if i % 2 else "OFF")
            fl = floor_ms(mq, args.count)
            e2e, dev_ms = [], []
            bar = Progress(args.count, "journeys")
            for i in range(args.count):
                j = js.via_mqtt("ON" if i % 2 else "OFF", (i % 255) + 1)
                e2e.append(j.e2e_ms)
                dev_ms.append(j.rx_to_tx_ms)
                bar.update()
            bar.close()
            mem = dev.fetch_info()
            mq.close()
        finally:
            dev.close()
    f, j, d = stats.summary(fl), stats.summary(e2e), stats.summary(dev_ms)
    rows = [
        ["floor: paho -> broker -> paho", f["p50"], f["p90"], f["p99"], f["max"], "1.00x"],
        ["journey: publish -> device -> state", j["p50"], j["p90"], j["p99"], j["max"], f"{j['p50'] / f['p50']:.2f}x"],
        ["  of which in the device (rx -> tx)", d["p50"], d["p90"], d["p99"], d["max"], ""],
    ]
    print()
    print(render([f"ms, n={args.count}", "p50", "p90", "p99", "max", "p50 / floor"], rows))
    print(f"\ndevice heap ({args.heapsize}): {mem['mem_alloc']} B used, {mem['mem_free']} B free after the run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
