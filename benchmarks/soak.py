"""Soak: 100 000 commands with random faults under the default Unix-port heap.

The soak itself is ``host_harness.measure.soak`` (see there for what it sends
and checks); this script starts a broker and a Unix-port device and runs it.

    python benchmarks/soak.py [--commands 100000] [--seed N] [--heapsize 80k] [--broker URL]

``tests/test_soak.py`` runs a short version of the same soak.
"""

from __future__ import annotations

import argparse
import random
import sys

from host_harness.broker.start import start_broker
from host_harness.dut.device import open_device
from host_harness.dut.unix_device import DEFAULT_HEAPSIZE
from host_harness.link.mqtt_client import HostMqtt
from host_harness.measure.progress import Progress
from host_harness.measure.soak import Soak


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--commands", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--batch", type=int, default=100, help="commands written before each barrier")
    ap.add_argument("--sample-every", type=int, default=5000, help="commands between heap samples")
    ap.add_argument("--heapsize", default=DEFAULT_HEAPSIZE)
    ap.add_argument("--broker", default=None, help="mqtt://... or mosquitto / amqtt (default: mosquitto if installed)")
    ap.add_argument("--no-mqtt", action="store_true", help="serial only, no broker")
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    broker = None if args.no_mqtt else start_broker(args.broker)
    try:
        if broker:
            print(f"broker: {broker.describe()}")
        dev = open_device("unix", "unix", broker.info if broker else None, heapsize=args.heapsize)
        mq = None
        try:
            if broker:
                dev.wait_mqtt()
                mq = HostMqtt(broker.info, "soak").connect()
            print(f"device {dev.device_id}, heap {args.heapsize}, seed {seed}")
            soak = Soak(dev, mq, seed=seed, batch=args.batch, sample_every=args.sample_every)
            bar = Progress(args.commands, "soak")
            try:
                res = soak.run(args.commands, bar)
            finally:
                bar.close()
        finally:
            if mq:
                mq.close()
            dev.close()
    finally:
        if broker:
            broker.stop()
    print()
    print(res.heap_table())
    print()
    print(res.summary())
    print("\nOK" if res.ok else "\nFAILED")
    return 0 if res.ok else 1


if __name__ == "__main__":
    sys.exit(main())
