"""Home Assistant's birth message: when Home Assistant (re)starts it publishes
``online`` on ``<discovery prefix>/status``, and devices publish their
discovery config and current state again. A stock Mosquitto, and its own
command-line clients in the roles of Home Assistant and of a watcher."""

from __future__ import annotations

import json
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest

from host_harness.broker.stock import StockMosquitto
from host_harness.pytest_plugin import DeviceFactory

pytestmark = [
    pytest.mark.unix_only,
    pytest.mark.skipif(
        shutil.which("mosquitto_sub") is None or shutil.which("stdbuf") is None,
        reason="needs mosquitto_sub, mosquitto_pub, stdbuf",
    ),
]
TIMEOUT = 10.0


class Watcher:
    """``mosquitto_sub -R -v`` (no stale retained messages): each line a topic and a payload."""

    def __init__(self, port: int, topics: list[str]) -> None:
        # line-buffered: its debug lines (the SUBACK) would sit in a pipe buffer
        cmd = ["stdbuf", "-oL", "mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-R", "-v", "-d"]
        for t in topics:
            cmd += ["-t", t]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait(self, pred: object, what: str, timeout: float = TIMEOUT) -> list[str]:
        """Lines up to and including the first for which pred(line) is true."""
        assert callable(pred)
        seen: list[str] = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out after {timeout:g} s waiting for {what}; saw {seen}")
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            seen.append(line)
            if pred(line):
                return seen

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(5)


def _pub(port: int, topic: str, msg: str) -> None:
    subprocess.run(
        ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-t", topic, "-m", msg], check=True, timeout=10
    )


@pytest.fixture(scope="module")
def stock() -> Iterator[StockMosquitto]:
    with StockMosquitto() as b:
        yield b


@pytest.mark.parametrize("prefix", [None, "ha-test"])
def test_home_assistants_birth_message_gets_the_config_and_state_again_and_offline_does_nothing(
    device_factory: DeviceFactory, stock: StockMosquitto, prefix: str | None
) -> None:
    dev = device_factory(broker=stock.info, config={"mqtt": {"discovery_prefix": prefix}} if prefix else None)
    dev.wait_mqtt()
    pre = prefix or "homeassistant"
    config_t, state_t, pong_t = f"{pre}/light/{dev.device_id}/config", f"{dev.base}/state", f"{dev.base}/pong"
    w = Watcher(stock.port, [config_t, state_t, pong_t])
    try:
        w.wait(lambda line: "SUBACK" in line, "the watcher's subscription")
        # A console command is answered on the console first and reported over MQTT after:
        # its state is waited for here, so that it cannot arrive after "offline" below.
        dev.set("ON", 123, cmd_id="birth-1")
        w.wait(lambda line: line.startswith(state_t) and '"birth-1"' in line, "the state of birth-1")
        # "offline" (Home Assistant going away) asks for nothing: the ping sent
        # after it is answered with nothing published before its pong.
        _pub(stock.port, f"{pre}/status", "offline")
        _pub(stock.port, f"{dev.base}/ping", '{"id":"after-offline"}')
        seen = w.wait(lambda line: line.startswith(pong_t), "the pong after 'offline'")
        assert not [ln for ln in seen if ln.startswith((config_t, state_t))], seen
        _pub(stock.port, f"{pre}/status", "online")
        got: dict[str, str] = {}
        w.wait(
            lambda line: bool(got.update([line.split(" ", 1)])) or {config_t, state_t} <= got.keys(),
            "the discovery config and the state again after 'online'",
        )
    finally:
        w.close()
    cfg = json.loads(got[config_t])
    assert cfg["state_topic"] == state_t and cfg["command_topic"] == f"{dev.base}/set"
    st = json.loads(got[state_t])
    assert (st["id"], st["state"], st["brightness"]) == ("birth-1", "ON", 123)
    assert dev.get().get("seq") == st["seq"]  # published again, not applied again
