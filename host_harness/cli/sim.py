"""``sim``: a Unix-port device on a broker, in the foreground, until Ctrl-C."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from host_harness.broker.start import start_broker
from host_harness.cli import validate
from host_harness.cli.help import subcommand
from host_harness.cli.run import add_common_options, board_for, tls_options
from host_harness.core.events import Event, WaitTimeout
from host_harness.dut.device import open_device


def run(args: argparse.Namespace) -> int:
    """run a Unix-port device on a broker for poking with any MQTT client

    Run the firmware on the MicroPython Unix port, connected to a broker (mosquitto started for it
    by default), and print its events until Ctrl-C; poke it with mosquitto_pub or any MQTT client."""
    validate.sim_options(args)  # every option and file, before anything starts
    with start_broker(args.broker) as broker:
        extra, heap = tls_options(args, broker.info)
        dev = open_device(
            args.device, board_for(args), broker.info, args.micropython, heap, device_id=args.device_id, config=extra
        )
        try:
            b = dev.base
            h, p = broker.info.host, broker.info.port
            print(f"broker: {broker.describe()}")
            print(f"device: {dev.device_id} on {dev.link.url} (board {dev.info.get('board')})")
            sys.stdout.flush()
            # The hint only once the device is subscribed: a command sent before
            # its first SUBSCRIBE would be lost (a new session has nothing queued).
            try:
                dev.wait_mqtt()
            except WaitTimeout as e:
                print(f"device: not on MQTT yet ({e}); its events below say why")
            print("try:")
            print(f"  mosquitto_sub -h {h} -p {p} -v -t '{b}/#'")
            cmd = '{"state":"ON","brightness":128,"id":"try-1"}'
            print(f"  mosquitto_pub -h {h} -p {p} -t {b}/set -m '{cmd}'")
            print("device events follow; Ctrl-C to stop")
            sys.stdout.flush()
            cursor = 0
            while True:
                ev = dev.log.wait_for(lambda e: True, 3600, "device events", cursor)
                cursor = ev.index
                print(_line(ev), flush=True)
        except KeyboardInterrupt:
            print("\nstopping")
        finally:
            dev.close()
    return 0


def _line(ev: Event) -> str:
    d: dict[str, Any] = dict(ev.data)
    return f"{time.strftime('%H:%M:%S')} {d.pop('ev', '?'):<7} {json.dumps(d, separators=(',', ':'))}"


def add_parser(sub: Any) -> None:
    p = subcommand(sub, "sim", run, "lightctl sim --broker mqtt://127.0.0.1:1883 --device-id light-1")
    add_common_options(p)
    p.add_argument("--device-id", default="light-1", help="device id (topic lightctl/<id>/...)")
