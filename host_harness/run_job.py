"""The main job: N light journeys over MQTT, a latency table, a verdict."""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from typing import Any

from . import boards, budget, stats
from .broker import start_broker
from .device import open_device
from .events import WaitTimeout
from .journey import Journey, Journeys
from .mqtt_client import HostMqtt
from .progress import Progress
from .table import render


def command_for(i: int, rng: random.Random) -> tuple[str | None, int | None]:
    """Alternating on/off and brightness changes."""
    step = i % 4
    if step == 0:
        return "ON", None
    if step == 1:
        return None, rng.randint(1, 255)
    if step == 2:
        return "OFF", None
    return "ON", rng.randint(1, 255)


def journeys_table(js: list[Journey]) -> str:
    rows: list[list[object]] = []
    for label, vals in (
        ("end-to-end: published -> state confirmed on host", [j.e2e_ms for j in js]),
        ("device: command received -> pin written", [j.rx_to_pin_ms for j in js]),
        ("device: command received -> report handed to MQTT", [j.rx_to_tx_ms for j in js]),
    ):
        s = stats.summary(vals)
        rows.append([label, s["p50"], s["p90"], s["p99"], s["max"]])
    return render(["latency (ms)", "p50", "p90", "p99", "max"], rows)


def add_common_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="unix", help="'unix' (default: spawn the Unix port) or a pyserial URL")
    p.add_argument(
        "--board", default=None, help="board name from boards/ (default: unix, or esp32-devkitc for a serial URL)"
    )
    p.add_argument(
        "--broker",
        default=None,
        help="mqtt://[user:pass@]host[:port], mosquitto or amqtt (default: mosquitto if installed)",
    )
    p.add_argument("--micropython", default=None, help="path of a MicroPython Unix-port executable")
    p.add_argument("--heapsize", default="64k", help="Unix-port heap size (default 64k, ESP32-like)")


def board_for(args: argparse.Namespace) -> str:
    return str(args.board or ("unix" if args.device == "unix" else "esp32-devkitc"))


def run(args: argparse.Namespace) -> int:
    board_name = board_for(args)
    bdef = boards.load(board_name)
    limits = boards.budget_ms(bdef)
    out = sys.stdout
    with start_broker(args.broker) as broker:
        print(f"broker: {broker.describe()}", file=out)
        dev = open_device(args.device, board_name, broker.info, args.micropython, args.heapsize)
        try:
            info = dev.info
            print(
                f"device: {args.device} ({info.get('platform')}), board {info.get('board')}, id {dev.device_id}, "
                f"firmware {info.get('version')}, ticks period 2**{int(info.get('ticks_period', 2)).bit_length() - 1}"
                + (f", heap {args.heapsize}, firmware from {dev.unix.build_note}" if dev.unix else ""),
                file=out,
            )
            dev.wait_mqtt()
            mq = HostMqtt(broker.info, "run").connect()
            try:
                js = Journeys(dev, mq, timeout=args.timeout)
                rng = random.Random(args.seed)
                for i in range(args.warmup):
                    st, br = command_for(i, rng)
                    js.via_mqtt(st, br)
                done: list[Journey] = []
                lost: list[str] = []
                bar = Progress(args.count, "journeys")
                for i in range(args.count):
                    st, br = command_for(i, rng)
                    try:
                        j = js.via_mqtt(st, br)
                        done.append(j)
                        bar.update(1, f"last {j.e2e_ms:.2f} ms")
                    except WaitTimeout as e:
                        lost.append(str(e))
                        bar.update(1, "LOST")
                bar.close()
            finally:
                mq.close()
        finally:
            dev.close()
    print(f"\n{len(done)} MQTT journeys confirmed, {len(lost)} lost, {args.warmup} warm-up not counted\n", file=out)
    if done:
        print(journeys_table(done), file=out)
    for msg in lost[:5]:
        print(f"lost: {msg}", file=out)
    checks = budget.check(limits, [j.e2e_ms for j in done], len(lost))
    ok = bool(done) and all(c.ok for c in checks)
    print(f"\nbudget ({bdef['name']}): {budget.describe(checks)}", file=out)
    print(f"verdict: {'PASS' if ok else 'FAIL'}", file=out)
    if args.json:
        write_json(Path(args.json), done, lost, checks, bdef, args)
        print(f"raw timings: {args.json}", file=out)
    return 0 if ok else 1


def write_json(
    path: Path,
    done: list[Journey],
    lost: list[str],
    checks: list[budget.Check],
    bdef: dict[str, Any],
    args: argparse.Namespace,
) -> None:
    data = {
        "board": bdef.get("name"),
        "device": args.device,
        "count": args.count,
        "budget_ms": boards.budget_ms(bdef),
        "checks": [{"name": c.name, "limit": c.limit, "measured": c.measured, "ok": c.ok} for c in checks],
        "lost": lost,
        "journeys": [j.as_dict() for j in done],
    }
    path.write_text(json.dumps(data, indent=1))


def add_parser(sub: Any) -> None:
    p = sub.add_parser("run", help="measure N light journeys over MQTT against the latency budget")
    add_common_options(p)
    p.add_argument("--count", type=int, default=200, help="journeys to measure (default 200)")
    p.add_argument("--warmup", type=int, default=20, help="journeys before measuring (default 20)")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for each confirmation")
    p.add_argument("--seed", type=int, default=1, help="seed for the brightness values")
    p.add_argument("--json", default=None, metavar="FILE", help="write every journey's raw timings here")
    p.set_defaults(func=run)
