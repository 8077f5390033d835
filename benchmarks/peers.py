"""Benchmark: lightctl's firmware against the light users would write instead.

The usual MicroPython light is a few dozen lines on micropython-lib's
``umqtt.simple`` (benchmarks/naive_light/main.py): a blocking ``wait_msg()``
loop, the state published retained at QoS 0. Both run on the Unix port under
the same heap; one identical paho client times ``set`` -> ``state`` with the
same command id, on a stock and a tuned Mosquitto, in closed loop and with
commands 200 ms apart, the lights' commands interleaved. A third light, the
naive one with each packet written whole instead of in umqtt.simple's pieces,
is the control for what those pieces do: the first piece wakes an idle broker
while the rest is still being written. A fifth light is lightctl with config
``"gc": "when_full"``: MicroPython collecting inside whatever allocation finds no
room, against lightctl's own collection between commands (``App.settle``).

Where each light's time went is split at the wire: with ``tcpdump`` and root, a
capture on loopback stamps each command and report into and out of the broker
(``host_harness/measure/capture.py``), so the host client, each broker pass and
the device are told apart per journey; lightctl's reports carry its own stamps,
which split its device part further (the Unix port's ``ticks_us`` is the host's
monotonic clock). Without them the split is skipped with the reason.

``umqtt.simple`` is not vendored: its sdist is taken from the package index
(checked against its sha256) into a cache folder; without the index the peer is
skipped with the reason.

    python benchmarks/peers.py [--count 100] [--spacing-ms 200] [--no-capture]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import multiprocessing
import os
import re
import secrets
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.client import CallbackAPIVersion

from host_harness import children
from host_harness.broker.info import BrokerInfo
from host_harness.broker.start import start_broker
from host_harness.core import latency
from host_harness.core.table import render
from host_harness.dut import boards
from host_harness.dut.device import open_device, unix_config
from host_harness.dut.unix_device import DEFAULT_HEAPSIZE, find_micropython
from host_harness.image import firmware_build
from host_harness.measure.capture import Capture, CaptureError, WirePacket, passages
from host_harness.measure.progress import Progress
from host_harness.netfault import packetlog

UMQTT = "micropython-umqtt.simple"
UMQTT_VERSION = "1.3.4"
UMQTT_SHA256 = "b6a2520239e3992c63a7de9370ee9b3d9d27819a90359c521f1c0f7ccab8d12f"
NAIVE = Path(__file__).resolve().parent / "naive_light" / "main.py"


def umqtt_dir() -> Path:
    """A folder holding umqtt/simple.py, fetched once from the package index."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lightctl" / f"umqtt-{UMQTT_VERSION}"
    if (cache / "umqtt" / "simple.py").is_file():
        return cache
    meta = json.load(urllib.request.urlopen(f"https://pypi.org/pypi/{UMQTT}/json", timeout=20))
    (sdist,) = [u for u in meta["releases"][UMQTT_VERSION] if u["packagetype"] == "sdist"]
    data = urllib.request.urlopen(sdist["url"], timeout=60).read()
    if hashlib.sha256(data).hexdigest() != UMQTT_SHA256:
        raise RuntimeError(f"{UMQTT} {UMQTT_VERSION}: sha256 mismatch")
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        (member,) = [m for m in tar.getmembers() if m.name.endswith("umqtt/simple.py")]
        src = tar.extractfile(member)
        assert src is not None
        (cache / "umqtt").mkdir(parents=True, exist_ok=True)
        (cache / "umqtt" / "simple.py").write_bytes(src.read())
    return cache


@contextmanager
def naive_light(info: BrokerInfo, base: str, heapsize: str, one_write: bool = False) -> Iterator[None]:
    """The naive light running; ``one_write``: its packets written whole, not in umqtt.simple's pieces."""
    lib = umqtt_dir()
    with tempfile.TemporaryDirectory(prefix="lightctl-naive-") as tmp:
        cfg = Path(tmp) / "config.json"
        conf = {"id": base.replace("/", "-"), "host": info.host, "port": info.port, "base": base}
        cfg.write_text(json.dumps({**conf, "one_write": one_write}))
        env = dict(os.environ, MICROPYPATH=f"{lib}:.frozen")
        proc = children.spawn(
            [find_micropython(), "-X", f"heapsize={heapsize}", str(NAIVE), str(cfg)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            stdin=subprocess.DEVNULL,
        )
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if b"ready" not in line:
                raise RuntimeError(f"the naive light did not start: {line!r}")
            yield
        finally:
            proc.kill()
            proc.wait(timeout=10)


@contextmanager
def lightctl_unread(info: BrokerInfo, heapsize: str, gc: str = "between") -> Iterator[str]:
    """lightctl's firmware run as the naive light is: its console going nowhere (as an ESP32's UART
    that nobody reads), no harness attached; yields its base topic once it is online. ``gc``: its
    config's garbage collection ("when_full": MicroPython's own, inside whatever allocation finds
    no room)."""
    micropython = find_micropython()
    firmware = firmware_build.build(micropython)
    cfg = unix_config(boards.load("unix"), info, device_id=f"unread-{secrets.token_hex(2)}")
    cfg["gc"] = gc
    base = f"{cfg['base_topic']}/{cfg['device_id']}"
    online = threading.Event()
    watch = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"watch-{cfg['device_id']}")
    watch.on_message = lambda _c, _u, m: online.set() if m.payload == b"online" else None
    watch.connect(info.host, info.port)
    watch.loop_start()
    watch.subscribe(f"{base}/availability")
    with tempfile.TemporaryDirectory(prefix="lightctl-unread-") as tmp:
        (Path(tmp) / "config.json").write_text(json.dumps(cfg))
        proc = children.spawn(
            [micropython, "-X", f"heapsize={heapsize}", str(firmware / "main.py")],
            stdin=subprocess.PIPE,  # held open, never written
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=tmp,
            env=dict(os.environ, LIGHTCTL_CONFIG=str(Path(tmp) / "config.json")),
        )
        try:
            try:
                if not online.wait(20):
                    raise TimeoutError(f"timed out after 20 s waiting for {base}/availability online")
            finally:  # the watcher's thread goes whether the light came online or not
                watch.loop_stop()
                watch.disconnect()
            yield base
        finally:
            children.end(proc)
            if proc.stdin:
                proc.stdin.close()


WARM_UP = 5  # journeys per light before those that count


def journey_id(tag: str, light: int, i: int) -> str:
    """The command id of journey ``i`` (warm-up included) of light number ``light``."""
    return f"{tag}{light}-{i}"


class Timer:
    """One paho client: publishes ``set`` with an id, stamps the ``state`` carrying that id."""

    def __init__(self, info: BrokerInfo, base: str) -> None:
        self.base = base
        self.arrived: dict[str, int] = {}
        self.cond = threading.Condition()
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"timer-{base}")
        self.c.on_message = self._on_message
        self.c.connect(info.host, info.port)
        self.c.loop_start()
        r, _ = self.c.subscribe(f"{base}/state", qos=0)
        assert r == mqtt.MQTT_ERR_SUCCESS

    def _on_message(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        t = time.monotonic_ns()
        try:
            cid = json.loads(msg.payload).get("id")
        except ValueError:
            return
        with self.cond:
            self.arrived.setdefault(str(cid), t)
            self.cond.notify_all()

    def journey(self, cid: str, state: str) -> float:
        payload = json.dumps({"state": state, "brightness": 128, "id": cid})
        t0 = time.monotonic_ns()
        self.c.publish(f"{self.base}/set", payload, qos=0)
        with self.cond:
            if not self.cond.wait_for(lambda: cid in self.arrived, timeout=5):
                raise TimeoutError(f"timed out after 5 s waiting for the state with id {cid}")
            return (self.arrived[cid] - t0) / 1e6

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def _time_journeys(info: BrokerInfo, bases: list[str], n: int, spacing_s: float, tag: str, out: Connection) -> None:
    """In a process of its own: n journeys per light (after WARM_UP to warm up), the lights in turn, each
    light's commands ``spacing_s`` apart (0: closed loop); timed by one paho client per light."""
    timers = [Timer(info, b) for b in bases]
    values: list[list[float]] = [[] for _ in bases]
    try:
        for i in range(n + WARM_UP):
            for k, timer in enumerate(timers):
                ms = timer.journey(journey_id(tag, k, i), "ON" if i % 2 == 0 else "OFF")
                if i >= WARM_UP:
                    values[k].append(ms)
                if spacing_s:
                    time.sleep(spacing_s / len(timers))  # the schedule: each light's commands this far apart
    finally:
        for timer in timers:
            timer.close()
    out.send(values)


def measure(info: BrokerInfo, bases: list[str], n: int, spacing_s: float, tag: str) -> list[list[float]]:
    """The lights' journeys interleaved (drifts of a shared machine fall on all alike), timed in a
    process of its own: in this one a thread reads lightctl's console, and its share of the GIL
    would stall the timing client."""
    ctx = multiprocessing.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_time_journeys, args=(info, bases, n, spacing_s, tag, send), daemon=True)
    proc.start()
    send.close()
    try:
        if not recv.poll(60 + n * len(bases) * (spacing_s + 5)):
            raise TimeoutError(f"timed out waiting for the timing client's {n} journeys on {', '.join(bases)}")
        values: list[list[float]] = recv.recv()
    except EOFError:
        raise RuntimeError(f"the timing client died (exit code {proc.exitcode})") from None
    finally:
        proc.join(timeout=10)
        if proc.is_alive():
            proc.kill()
    return values  # per light, after its warm-up


SPLIT = ["n", "journey", "host client", "broker, command", "device", "broker, report"]
INSIDE = ["in -> t_rx", "t_rx -> t_tx", "t_tx -> out"]
_STAMP = re.compile(rb'"(t_rx|t_tx)":(\d+)')


def wire_split(packets: list[WirePacket], port: int, ids: list[str], journeys: list[float]) -> dict[str, float]:
    """Where one light's journeys went, p50 of each part in µs, from the loopback capture: the host
    client (its journey less the time between the command going into the broker and the report
    coming out), each broker pass, and the device from the command's last byte in to the report's
    out. A report carrying lightctl's stamps (``t_rx``, ``t_tx``: the Unix port's ticks_us is the
    host's CLOCK_MONOTONIC) splits the device further: waking and reading the command, the
    firmware's work on it, writing the report."""
    cols: dict[str, list[float]] = {k: [] for k in SPLIT[1:] + INSIDE}
    for cid, ms in zip(ids, journeys, strict=True):
        got = passages(packets, port, packetlog.quoted(cid))
        # the command's first copy out (to the device; a second subscriber may get one too), then
        # the report: the first message with the id to go into the broker after that
        c_in, c_out = (got[0].into, got[0].out) if got else (None, None)
        if c_in is None or c_out is None:
            continue
        rep = next((g for g in got if g.into is not None and g.into > c_out), None)
        if rep is None or rep.into is None or rep.out is None:
            continue
        r_in, r_out = rep.into, rep.out
        cols["journey"].append(ms * 1e3)
        cols["host client"].append(ms * 1e3 - (r_out - c_in) / 1e3)
        cols["broker, command"].append((c_out - c_in) / 1e3)
        cols["device"].append((r_in - c_out) / 1e3)
        cols["broker, report"].append((r_out - r_in) / 1e3)
        stamps = {k.decode(): int(v) * 1000 for k, v in _STAMP.findall(rep.data)}
        if len(stamps) == 2:
            cols["in -> t_rx"].append((stamps["t_rx"] - c_out) / 1e3)
            cols["t_rx -> t_tx"].append((stamps["t_tx"] - stamps["t_rx"]) / 1e3)
            cols["t_tx -> out"].append((r_in - stamps["t_tx"]) / 1e3)
    got = {k: statistics.median(v) for k, v in cols.items() if v}
    got["n"] = len(cols["journey"])
    return got


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=100, help="journeys per row and device (default 100)")
    p.add_argument("--spacing-ms", type=float, default=200.0, help="the spaced schedule's gap (default 200)")
    p.add_argument("--heapsize", default=DEFAULT_HEAPSIZE)
    p.add_argument("--no-capture", action="store_true", help="no loopback capture, no split of where the time went")
    a = p.parse_args(argv)
    try:
        umqtt_dir()
    except Exception as e:
        print(f"skipped: {UMQTT} {UMQTT_VERSION} could not be fetched from the package index ({e})")
        return 0
    schedules = [("closed loop", 0.0), (f"commands {a.spacing_ms:g} ms apart", a.spacing_ms / 1e3)]
    names = ["umqtt.simple", "umqtt, one write", "lightctl", "lightctl, console read", "lightctl, GC when full"]
    rows: list[list[object]] = []
    split_rows: list[list[object]] = []
    no_capture = ""
    bar = Progress(2 * len(schedules), "peers")
    for kind in ("mosquitto-tuned", "mosquitto"):
        broker_name = "stock" if kind == "mosquitto" else "tuned"
        with start_broker(kind) as broker:
            info = broker.info
            dev = open_device("unix", "unix", info, heapsize=a.heapsize)
            cap: Capture | None = None
            try:
                dev.wait_mqtt()
                with (
                    naive_light(info, "naive", a.heapsize),
                    naive_light(info, "naive1", a.heapsize, one_write=True),
                    lightctl_unread(info, a.heapsize) as unread,
                    lightctl_unread(info, a.heapsize, gc="when_full") as full,
                ):
                    if not a.no_capture:
                        try:
                            cap = Capture(info.port).start()
                        except CaptureError as e:
                            no_capture = str(e)
                    done: list[tuple[str, str, list[list[float]]]] = []
                    for label, gap in schedules:
                        lights = ["naive", "naive1", unread, dev.base, full]
                        tag = f"{kind[-5:]}{gap:g}-"
                        values = measure(info, lights, a.count, gap, tag)
                        done.append((label, tag, values))
                        n, n1, u, o, f = (latency.summarize(v) for v in values)
                        bar.update(1)
                        rows.append(
                            [
                                f"{broker_name}, {label}",
                                f"{n.p50:.3f} / {n.p99:.3f}",
                                f"{n1.p50:.3f} / {n1.p99:.3f}",
                                f"{u.p50:.3f} / {u.p99:.3f}",
                                f"{u.p50 / n.p50:.2f}x / {u.p99 / n.p99:.2f}x",
                                f"{o.p50:.3f} / {o.p99:.3f}",
                                f"{f.p50:.3f} / {f.p99:.3f}",
                                f"{u.p50 / f.p50:.2f}x / {u.p99 / f.p99:.2f}x",
                            ]
                        )
                    if cap is not None:
                        cap.stop()
                        packets = cap.packets()
                        for label, tag, values in done:
                            for k, name in enumerate(names):
                                ids = [journey_id(tag, k, WARM_UP + i) for i in range(len(values[k]))]
                                got = wire_split(packets, info.port, ids, values[k])
                                split_rows.append(
                                    [f"{broker_name}, {label}", name]
                                    + [f"{got[c]:.0f}" if c in got else "" for c in SPLIT + INSIDE]
                                )
            finally:
                if cap is not None:
                    cap.close()
                dev.close()
    bar.close()
    print(render(["broker, schedule", *names[:3], "lightctl / umqtt", *names[3:], "GC between / when full"], rows))
    print(
        "ms, p50 / p99; one paho client per light (in a process of its own) timing set -> state with the same id,"
        "\nthe lights' commands interleaved; umqtt, one write: the same light with each packet written whole"
        "\ninstead of in umqtt.simple's four pieces; lightctl: its console going nowhere, as the naive light's"
        "\n(and an ESP32's UART nobody reads); console read: lightctl with the harness reading its console line"
        '\nper change (its reader wakes beside the broker); GC when full: lightctl with config "gc": "when_full"'
        "\n(MicroPython collects inside whatever allocation finds no room; lightctl collects between commands);"
        "\nratio <= 1: lightctl as fast or faster"
    )
    print()
    if split_rows:
        print(render(["broker, schedule", "light", *SPLIT, *INSIDE], split_rows))
        print(
            "where the time went: µs, p50 of each part over the same journeys (medians do not add up), from a"
            "\npacket capture on loopback; n: journeys whose four packets (command and report, each into and out"
            "\nof the broker) the capture holds; host client: the journey less command into the broker -> report"
            "\nout of it; broker: into it -> out of it; device: command out of the broker -> the report's last"
            "\nbyte into it; lightctl's own stamps split the device: in -> t_rx (waking, reading the command),"
            "\nt_rx -> t_tx (decode, check, apply, the report formed), t_tx -> out (writing the report)"
        )
    else:
        print(f"where the time went: not split ({no_capture or 'capture off (--no-capture)'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
