"""The fault scenario table: commands sent / applied once / duplicated / lost / recovery.

python benchmarks/faults.py [--count 20] [--partition 10]
"""

from __future__ import annotations

import argparse
import sys

from host_harness.broker.start import start_broker
from host_harness.dut.device import Device, open_device
from host_harness.netfault import scenarios as faults
from host_harness.netfault.proxy import FaultProxy


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=20, help="commands per scenario")
    ap.add_argument("--partition", type=float, default=10.0, help="partition length, s")
    ap.add_argument("--broker", default=None, help="mosquitto or amqtt (the scenarios restart it)")
    args = ap.parse_args()
    results = []
    with start_broker(prefer=args.broker) as broker:
        print(f"broker: {broker.describe()}")
        opened: list[Device] = []
        scenarios = [
            lambda p, mk: faults.lost_confirmation(broker, mk, args.count),
            lambda p, mk: faults.broker_restart(broker, mk, args.count),
            lambda p, mk: faults.partition(broker, p, mk, args.count, args.partition),
            lambda p, mk: faults.device_killed(broker, p, mk, args.count),
            lambda p, mk: faults.slow_link(broker, p, mk, args.count, 0.5),
        ]
        for scenario in scenarios:
            with FaultProxy(broker.info.host, broker.info.port).start() as proxy:

                def make(proxy: FaultProxy = proxy, **kw: object) -> Device:
                    d = open_device("unix", "unix", proxy.info_for(broker.info), keepalive=4, **kw)  # type: ignore[arg-type]
                    opened.append(d)
                    d.wait_mqtt()
                    return d

                try:
                    res = scenario(proxy, make)
                finally:
                    for d in opened:
                        d.close()
                    opened.clear()
                results.append(res)
                print(faults.table([res]).splitlines()[-1], file=sys.stderr)
    print()
    print(faults.table(results))
    return 0 if all(r.lost == 0 and r.duplicated == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
