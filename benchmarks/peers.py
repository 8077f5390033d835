"""Benchmark: lightctl's firmware against the light users would write instead.

The usual MicroPython light is a few dozen lines on micropython-lib's
``umqtt.simple`` (benchmarks/naive_light/main.py): a blocking ``wait_msg()``
loop, the state published retained at QoS 0. Both run on the Unix port under
the same heap; one identical paho client times ``set`` -> ``state`` with the
same command id, on a stock and a tuned Mosquitto, in closed loop and with
commands 200 ms apart.

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
from host_harness.dut.device import open_device
from host_harness.dut.unix_device import DEFAULT_HEAPSIZE, find_micropython
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
def naive_light(info: BrokerInfo, base: str, heapsize: str) -> Iterator[None]:
    lib = umqtt_dir()
    with tempfile.TemporaryDirectory(prefix="lightctl-naive-") as tmp:
        cfg = Path(tmp) / "config.json"
        cfg.write_text(json.dumps({"id": base.replace("/", "-"), "host": info.host, "port": info.port, "base": base}))
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


def _time_journeys(info: BrokerInfo, base: str, n: int, spacing_s: float, tag: str, out: Connection) -> None:
    """In a process of its own: n journeys (after 5 to warm up) timed by one paho client; sends the ms back."""
    timer = Timer(info, base)
    values: list[float] = []
    try:
        for i in range(n + 5):
            ms = timer.journey(f"{tag}-{i}", "ON" if i % 2 == 0 else "OFF")
            if i >= 5:  # warm-up
                values.append(ms)
            if spacing_s:
                time.sleep(spacing_s)  # the schedule itself: commands this far apart
    finally:
        timer.close()
    out.send(values)


def measure(info: BrokerInfo, base: str, n: int, spacing_s: float, tag: str) -> latency.Summary:
    """The timing client runs in a process of its own, for both lights alike: in this process a
    thread reads lightctl's console, and its share of the GIL would stall the client."""
    ctx = multiprocessing.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_time_journeys, args=(info, base, n, spacing_s, tag, send), daemon=True)
    proc.start()
    send.close()
    try:
        if not recv.poll(60 + n * (spacing_s + 5)):
            raise TimeoutError(f"timed out waiting for the timing client's {n} journeys on {base}")
        values: list[float] = recv.recv()
    except EOFError:
        raise RuntimeError(f"the timing client for {base} died (exit code {proc.exitcode})") from None
    finally:
        proc.join(timeout=10)
        if proc.is_alive():
            proc.kill()
    return latency.summarize(values)


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
    bar = Progress(2 * 2 * len(schedules) * a.count, "peers")
    for kind in ("mosquitto-tuned", "mosquitto"):
        with start_broker(kind) as broker:
            info = broker.info
            dev = open_device("unix", "unix", info, heapsize=a.heapsize)
            try:
                dev.wait_mqtt()
                with naive_light(info, "naive", a.heapsize):
                    for label, gap in schedules:
                        n = measure(info, "naive", a.count, gap, f"n-{kind}-{gap}")
                        bar.update(a.count)
                        o = measure(info, dev.base, a.count, gap, f"o-{kind}-{gap}")
                        bar.update(a.count)
                        rows.append(
                            [
                                f"{'stock' if kind == 'mosquitto' else 'tuned'}, {label}",
                                n.p50,
                                n.p99,
                                o.p50,
                                o.p99,
                                f"{o.p50 / n.p50:.2f}x",
                                f"{o.p99 / n.p99:.2f}x",
                            ]
                        )
            finally:
                dev.close()
    bar.close()
    print(
        render(
            ["broker, schedule", "umqtt.simple p50", "p99", "lightctl p50", "p99", "p50 ratio", "p99 ratio"],
            rows,
        )
    )
    print("ms, one paho client (in a process of its own) timing set -> state with the same id; "
          "ratio = lightctl / umqtt.simple (<= 1 is better)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
