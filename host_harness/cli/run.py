"""The main job: light journeys, a table per journey and hop, a verdict."""

from __future__ import annotations

import argparse
import random
from contextlib import ExitStack, nullcontext
from pathlib import Path
from typing import Any

from host_harness.broker import facts as broker_facts
from host_harness.broker.bridge import BridgedBrokers, device_side
from host_harness.broker.info import BrokerInfo
from host_harness.broker.mosquitto import find_mosquitto
from host_harness.broker.running import ExternalBroker
from host_harness.broker.start import start_broker
from host_harness.cli import signals, validate
from host_harness.cli.help import device_option, subcommand
from host_harness.core import budgets
from host_harness.core.results import JourneyRun
from host_harness.dut.device import Device, open_device
from host_harness.dut.labgrid_place import add_coordinator_option, serial_note
from host_harness.dut.unix_device import DEFAULT_HEAPSIZE
from host_harness.link.mqtt_client import HostMqtt
from host_harness.measure.clocksync import clock_for
from host_harness.measure.journeys import Journeys
from host_harness.measure.load import closed_loop, command_for, open_loop_mqtt
from host_harness.measure.progress import Progress
from host_harness.measure.tapcost import TapCost, alternate
from host_harness.measure.taps import TapPoint, Taps, describe_floor
from host_harness.netfault import attach
from host_harness.report import facts
from host_harness.report import write as report


def add_common_options(p: argparse.ArgumentParser) -> None:
    device_option(
        p,
        "'unix' (default: spawn the Unix port) or the device's serial port (/dev/ttyUSB0, rfc2217://, labgrid:PLACE)",
        required=False,
        default="unix",
    )
    add_coordinator_option(p)
    p.add_argument(
        "--board", default=None, help="board name from boards/ (default: unix, or esp32-devkitc for a serial URL)"
    )
    p.add_argument(
        "--broker",
        default=None,
        help="mqtt://[user:pass@]host[:port], mosquitto or amqtt (default: mosquitto if installed)",
    )
    p.add_argument("--micropython", default=None, help="path of a MicroPython Unix-port executable")
    p.add_argument(
        "--heapsize",
        default=DEFAULT_HEAPSIZE,
        help=f"Unix-port heap size (default {DEFAULT_HEAPSIZE}, ESP32-like; 32k more with TLS)",
    )
    p.add_argument("--ca", default=None, metavar="FILE", help="CA certificate that signed an mqtts:// broker's")
    p.add_argument("--cert", default=None, metavar="FILE", help="client certificate for mqtts://")
    p.add_argument("--key", default=None, metavar="FILE", help="client key for mqtts://")


def tls_options(args: argparse.Namespace, info: BrokerInfo) -> tuple[dict[str, Any] | None, str | None]:
    """Device config for TLS (file paths the Unix-port device reads) and the heap it needs."""
    if not info.tls:
        return None, args.heapsize
    mqtt: dict[str, Any] = {}
    for key in ("ca", "cert", "key"):
        v = getattr(args, key)
        if v:
            mqtt[key] = str(Path(v).resolve())
    heap = args.heapsize
    if heap == DEFAULT_HEAPSIZE:
        # mbedTLS takes ~6 KB of the Unix port's MicroPython heap (an ESP32 has a system heap for it)
        heap = f"{int(DEFAULT_HEAPSIZE.rstrip('k')) + 32}k"
    return {"mqtt": mqtt}, heap


def host_client(args: argparse.Namespace, info: BrokerInfo, name: str) -> HostMqtt:
    return HostMqtt(info, name, ca_file=args.ca, cert_file=args.cert, key_file=args.key)


def board_for(args: argparse.Namespace) -> str:
    return str(args.board or ("unix" if args.device == "unix" else "esp32-devkitc"))


def measure(
    dev: Device,
    mq: HostMqtt | None,
    kinds: list[str],
    args: argparse.Namespace,
    meta: dict[str, Any] | None = None,
    runs: list[JourneyRun] | None = None,
    taps: Taps | None = None,
) -> list[JourneyRun]:
    """The journeys of each kind; ``meta`` (if given) gets the clock sync's facts. Each kind's run is
    appended to ``runs`` as it starts, so an interruption keeps what was measured. With ``taps``,
    closed-loop MQTT journeys alternate blocks with the taps on and off (their cost goes in ``meta``)."""
    runs = runs if runs is not None else []
    js = Journeys(dev, mq, timeout=args.timeout)
    clock, clock_note = clock_for(dev, mq)
    print(f"clock: {clock_note}")
    cost = None
    if taps is not None:
        cost = TapCost([], [], taps.floor())
        js.taps = taps.on(dev.base)
        print(
            f"taps: at {', '.join(taps.names)}; delivery to a tap (half its own round trip): "
            f"{describe_floor(cost.floors)}"
        )
    rng = random.Random(0)
    for i in range(args.warmup):
        st, br = command_for(i, rng)
        (js.via_mqtt if mq is not None else js.via_serial)(st, br)
    for n_kind, kind in enumerate(kinds):
        if n_kind:
            clock.resync()  # a long run drifts: top the sync up between phases
        n = args.count if kind != "button" else max(1, min(args.count, args.button_count))
        bar = Progress(n, f"{kind:>6} journeys")
        open_loop = kind == "mqtt" and args.rate
        run = JourneyRun(kind, f"open@{args.rate:g}/s" if open_loop else "closed")
        runs.append(run)
        try:
            if open_loop:
                open_loop_mqtt(js, args.rate, n, clock, seed=args.seed, progress=bar, into=run)
            elif kind == "mqtt" and taps is not None and cost is not None:
                baseline = alternate(js, taps, n, clock, seed=args.seed, progress=bar, into=run)
                cost.with_ms, cost.without_ms = [j.e2e_ms for j in run.journeys], [j.e2e_ms for j in baseline.journeys]
            else:
                closed_loop(js, kind, n, clock, seed=args.seed, progress=bar, into=run)
        finally:
            bar.close()
    print(f"clock after the run: {clock.describe()}")
    for r in runs:
        if r.sender:
            print(f"sender ({r.kind}, {r.schedule}): {r.sender}")
    if taps is not None and cost is not None:
        cost.missed = taps.missed
        print(f"taps: {cost.describe()}")
    if meta is not None:
        meta.update(facts.clock(clock))
        if taps is not None and cost is not None:
            meta["taps"] = f"at {', '.join(taps.names)}: {cost.describe()}"
        for r in runs:
            if r.sender:
                meta["sender"] = r.sender
    return runs


def run(args: argparse.Namespace) -> int:
    """measure light journeys against the latency budget

    Measure light journeys (a command over MQTT or serial, or a button press, until the device
    confirms it) on a Unix-port device or a real board, split each into hops, and check them against
    the board's latency budget. Ctrl-C prints what was measured so far."""
    checked = validate.run_options(args)  # every option, file and key, before anything starts
    bdef, budget = checked.board, checked.budget
    if args.devices is not None:  # a room of lights: cli/devices.py
        from host_harness.cli.devices import run_devices

        return run_devices(args, checked.board_name)
    # Serial journeys need no broker: none is started unless one is asked for, and none is waited for.
    meta: dict[str, Any] = {
        "run started": facts.iso_now(),
        "board": f"{bdef.get('name')}: {bdef.get('description', '')}",
    }
    runs: list[JourneyRun] = []
    try:
        _measure_on_device(args, checked, meta, runs)
    except signals.Interrupted as stop:
        note = f"(incomplete: interrupted by {stop.name})"
        print(f"\n{note}: results measured so far")
        print(f"\nbudget: {budget.source}")
        verdicts = [budgets.evaluate(r, budget.for_kind(r.kind)) for r in runs]
        for r, v in zip(runs, verdicts, strict=True):
            _print_run(r, v, note)
        if not runs:
            print("nothing measured")
        print(f"\nverdict: none {note}")
        if runs:
            meta["incomplete"] = note.strip("()")
            _write_files(args, meta, budget, runs, verdicts)
        return stop.exit_code
    print(f"\nbudget: {budget.source}")
    verdicts = []
    for r in runs:
        v = budgets.evaluate(r, budget.for_kind(r.kind))
        verdicts.append(v)
        _print_run(r, v)
    ok = all(v.ok for v in verdicts)
    print(f"\nverdict: {'PASS' if ok else 'FAIL'}")
    _write_files(args, meta, budget, runs, verdicts)
    return 0 if ok else 1


def _print_run(r: JourneyRun, v: budgets.Verdict, note: str = "") -> None:
    print(
        f"\n{r.kind} journeys ({r.schedule}): {len(r.journeys)} confirmed, {len(r.lost)} lost, "
        f"{len(r.duplicated)} duplicated, {len(r.errors)} refused" + (f" {note}" if note else "")
    )
    print(v.message())
    for msg in r.lost[:3]:
        print(f"  lost: {msg}")


def _measure_on_device(
    args: argparse.Namespace, checked: validate.Checked, meta: dict[str, Any], runs: list[JourneyRun]
) -> None:
    """Start the broker and the device, measure into ``runs``, stop them (also when interrupted)."""
    kinds, board_name = checked.kinds, checked.board_name
    link_name = getattr(args, "link", None)
    with ExitStack() as stack:
        link = stack.enter_context(attach.open_link(link_name, log=True)) if link_name else None
        if link_name:
            meta["link"] = link_name
        broker_cm: Any = nullcontext(None)
        if args.bridge:
            broker_cm = BridgedBrokers(str(find_mosquitto()), tuned=args.broker == "mosquitto-tuned").start()
        elif checked.needs_mqtt or args.broker:
            broker_cm = start_broker(args.broker, **attach.broker_options(link, args.broker))
        broker = stack.enter_context(broker_cm)
        print(f"broker: {broker.describe() if broker else 'none (serial journeys only)'}")
        if link is not None:
            print(link.describe())
        extra, heap = tls_options(args, broker.info) if broker else (None, args.heapsize)
        if link is not None:
            extra = {**(extra or {}), **attach.device_config(link)}
        if args.device == "unix":
            dev = open_device(
                "unix",
                board_name,
                (attach.device_broker(link, broker) if link else device_side(broker)) if broker else None,
                args.micropython,
                heap,
                config=extra,
                prefix=link.prefix() if link else None,
            )
        else:  # a board runs the config deployed to it
            dev = open_device(args.device, board_name)
        try:
            info = dev.info
            print(
                f"device: {args.device} ({info.get('platform')}), board {info.get('board')}, id {dev.device_id}, "
                f"firmware {info.get('version')}, ticks period 2**{int(info.get('ticks_period', 2)).bit_length() - 1}"
                + (f", heap {args.heapsize}, firmware from {dev.unix.build_note}" if dev.unix else "")
            )
            for w in budgets.assumption_warnings(checked.budget, info):
                print(w)
            note = serial_note(args.device)
            if note and "serial" in kinds:
                print(f"note: {note}")
            if "button" in kinds and not dev.board.get("button"):
                kinds.remove("button")
            meta["device"] = f"{args.device} ({info.get('platform')}), id {dev.device_id}"
            meta.update(facts.firmware(dev))
            mq, taps = None, None
            if any(k in validate.MQTT_KINDS for k in kinds):
                dev.wait_mqtt()
                mq = host_client(args, broker.info, "run").connect()
                if link is not None:
                    attach.wait_across(dev, mq)
                if args.taps:
                    taps = Taps(tap_points(broker), lambda info, name: host_client(args, info, name)).connect()
            try:
                if broker is None:
                    meta["broker"] = "none (serial journeys only)"
                else:
                    said = broker_facts.sys_version(mq) if isinstance(broker, ExternalBroker) and mq else None
                    meta.update(facts.broker(broker_facts.facts(broker, said)))
                measure(dev, mq, kinds, args, meta, runs, taps)
                if link is not None:
                    said = attach.batching(link, runs)
                    if said:
                        print(f"link: {said}")
                        meta["link_batching"] = said
            finally:
                if taps is not None:
                    taps.close()
                if mq is not None:
                    mq.close()
        finally:
            dev.close()


def tap_points(broker: Any) -> list[TapPoint]:
    """The brokers to tap, host side first: the cloud and the local one of a bridged path, or the one broker."""
    if isinstance(broker, BridgedBrokers) and broker.local is not None:
        return [TapPoint("cloud", broker.info), TapPoint("local", broker.local.info)]
    return [TapPoint("broker", broker.info)]


def _write_files(
    args: argparse.Namespace,
    meta: dict[str, Any],
    budget: budgets.Budget,
    runs: list[JourneyRun],
    verdicts: list[budgets.Verdict],
) -> None:
    meta["budget"] = budget.source
    if serial_note(args.device) and any(r.kind == "serial" for r in runs):
        meta["serial_path"] = serial_note(args.device)
    if args.json:
        import json

        Path(args.json).write_text(
            json.dumps(
                {
                    "meta": meta,
                    "runs": [r.as_dict() for r in runs],
                    "verdicts": [
                        {
                            "kind": v.kind,
                            "ok": v.ok,
                            "breaches": [str(b) for b in v.breaches],
                            "blamed": [{"metric": b.metric, "hop": b.hop, "share": b.share} for b in v.blames],
                            "diagnosis": v.diagnosis,
                        }
                        for v in verdicts
                    ],
                },
                indent=1,
            )
        )
        print(f"raw timings: {args.json}")
    if args.report:
        d = report.write(args.report, runs, verdicts, meta, budget)
        print(f"report: {d}/index.html")


def add_parser(sub: Any) -> None:
    p = subcommand(
        sub,
        "run",
        run,
        "lightctl run --count 100                       # Unix-port device, mosquitto started for it",
        "lightctl run --device /dev/ttyUSB0 --board esp32-devkitc --broker mqtt://192.168.1.10",
    )
    add_common_options(p)
    p.add_argument("--journeys", default="mqtt,serial,button", help="kinds to run (default mqtt,serial,button)")
    p.add_argument("--count", type=int, default=200, help="journeys per kind (default 200)")
    p.add_argument("--button-count", type=int, default=50, help="at most this many button journeys (default 50)")
    p.add_argument("--rate", type=float, default=None, help="MQTT open loop at this many commands/s (default closed)")
    p.add_argument("--warmup", type=int, default=20, help="warm-up journeys (default 20; over serial if no MQTT)")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for each confirmation")
    p.add_argument("--seed", type=int, default=1, help="seed for the brightness values")
    p.add_argument(
        "--devices", type=int, default=None, metavar="N", help="N Unix-port lights: group commands, one host client"
    )
    p.add_argument("--budget", default=None, metavar="FILE", help="a budget TOML laid over the board's, limit by limit")
    p.add_argument(
        "--no-budget", action="store_true", help="run without a latency budget (a board without one needs this)"
    )
    p.add_argument(
        "--link",
        default=None,
        metavar="NAME",
        choices=list(attach.PROFILES),
        help=f"put the Unix-port device behind a packet-level link (root): {', '.join(attach.PROFILES)}",
    )
    p.add_argument(
        "--taps",
        action="store_true",
        help="tap the command and state at each broker: split the network hops there (and measure the taps' cost)",
    )
    p.add_argument(
        "--bridge",
        action="store_true",
        help="start a local mosquitto bridged to a cloud one: the device at the local, the host at the cloud",
    )
    p.add_argument("--json", default=None, metavar="FILE", help="write every journey's raw timings here")
    p.add_argument("--report", default=None, metavar="DIR", help="write JSON, HdrHistogram logs, plots and HTML")
