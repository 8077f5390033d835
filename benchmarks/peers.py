"""Benchmark: lightctl's firmware against the light users would write instead.

The usual MicroPython light is a few dozen lines on micropython-lib's
``umqtt.simple`` (benchmarks/naive_light/main.py): a blocking ``wait_msg()``
loop, the state published retained at QoS 0. Both run on the Unix port under
the same heap; one identical paho client times ``set`` -> ``state`` with the
same command id, on a stock and a tuned Mosquitto, in closed loop and with
commands 200 ms apart, the lights' commands interleaved. A third light, the
naive one with each packet written whole instead of in umqtt.simple's pieces,
is the control for what those pieces do: the first piece wakes an idle broker
while the rest is still being written.

``umqtt.simple`` is not vendored: its sdist is taken from the package index
(checked against its sha256) into a cache folder; without the index the peer is
skipped with the reason.

    python benchmarks/peers.py [--count 100] [--spacing-ms 200]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import multiprocessing
import os
import secrets
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
from host_harness.measure.progress import Progress

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
def lightctl_unread(info: BrokerInfo, heapsize: str) -> Iterator[str]:
    """lightctl's firmware run as the naive light is: its console going nowhere (as an ESP32's UART
    that nobody reads), no harness attached; yields its base topic once it is online."""
    micropython = find_micropython()
    firmware = firmware_build.build(micropython)
    cfg = unix_config(boards.load("unix"), info, device_id=f"unread-{secrets.token_hex(2)}")
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
    """In a process of its own: n journeys per light (after 5 to warm up), the lights in turn, each
    light's commands ``spacing_s`` apart (0: closed loop); timed by one paho client per light."""
    timers = [Timer(info, b) for b in bases]
    values: list[list[float]] = [[] for _ in bases]
    try:
        for i in range(n + 5):
            for k, timer in enumerate(timers):
                ms = timer.journey(f"{tag}{k}-{i}", "ON" if i % 2 == 0 else "OFF")
                if i >= 5:  # warm-up
                    values[k].append(ms)
                if spacing_s:
                    time.sleep(spacing_s / len(timers))  # the schedule: each light's commands this far apart
    finally:
        for timer in timers:
            timer.close()
    out.send(values)


def measure(info: BrokerInfo, bases: list[str], n: int, spacing_s: float, tag: str) -> list[latency.Summary]:
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
    return [latency.summarize(v) for v in values]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=100, help="journeys per row and device (default 100)")
    p.add_argument("--spacing-ms", type=float, default=200.0, help="the spaced schedule's gap (default 200)")
    p.add_argument("--heapsize", default=DEFAULT_HEAPSIZE)
    a = p.parse_args(argv)
    try:
        umqtt_dir()
    except Exception as e:
        print(f"skipped: {UMQTT} {UMQTT_VERSION} could not be fetched from the package index ({e})")
        return 0
    schedules = [("closed loop", 0.0), (f"commands {a.spacing_ms:g} ms apart", a.spacing_ms / 1e3)]
    rows: list[list[object]] = []
    bar = Progress(2 * len(schedules), "peers")
    for kind in ("mosquitto-tuned", "mosquitto"):
        with start_broker(kind) as broker:
            info = broker.info
            dev = open_device("unix", "unix", info, heapsize=a.heapsize)
            try:
                dev.wait_mqtt()
                with (
                    naive_light(info, "naive", a.heapsize),
                    naive_light(info, "naive1", a.heapsize, one_write=True),
                    lightctl_unread(info, a.heapsize) as unread,
                ):
                    for label, gap in schedules:
                        lights = ["naive", "naive1", unread, dev.base]
                        n, n1, u, o = measure(info, lights, a.count, gap, f"{kind[-5:]}{gap:g}-")
                        bar.update(1)
                        rows.append(
                            [
                                f"{'stock' if kind == 'mosquitto' else 'tuned'}, {label}",
                                f"{n.p50:.3f} / {n.p99:.3f}",
                                f"{n1.p50:.3f} / {n1.p99:.3f}",
                                f"{u.p50:.3f} / {u.p99:.3f}",
                                f"{u.p50 / n.p50:.2f}x / {u.p99 / n.p99:.2f}x",
                                f"{o.p50:.3f} / {o.p99:.3f}",
                            ]
                        )
            finally:
                dev.close()
    bar.close()
    print(
        render(
            ["broker, schedule", "umqtt.simple", "umqtt, one write", "lightctl", "lightctl / umqtt",
             "lightctl, console read"],
            rows,
        )
    )  # fmt: skip
    print(
        "ms, p50 / p99; one paho client per light (in a process of its own) timing set -> state with the same id,"
        "\nthe lights' commands interleaved; umqtt, one write: the same light with each packet written whole"
        "\ninstead of in umqtt.simple's four pieces; lightctl: its console going nowhere, as the naive light's"
        "\n(and an ESP32's UART nobody reads); console read: lightctl with the harness reading its console line"
        "\nper change (its reader wakes beside the broker); ratio <= 1: lightctl as fast or faster"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
