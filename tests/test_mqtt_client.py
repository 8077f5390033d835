"""The firmware's MQTT client as a neighbour on a small network: the keepalive
arithmetic for any keepalive, sockets closed when a link ends (not left to the
garbage collector), and the broker's name resolved once per failure cycle.
Real interpreter, real broker, real sockets."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from host_harness.broker.running import RunningBroker
from host_harness.broker.start import start_broker
from host_harness.core.events import Event
from host_harness.dut.device import Device
from host_harness.dut.unix_device import find_micropython
from host_harness.netfault.framing import MqttFramer, mqtt_publish_payload, mqtt_publish_topic
from host_harness.netfault.proxy import FaultProxy
from host_harness.paths import FIRMWARE_DIR
from host_harness.pytest_plugin import DeviceFactory

pytestmark = pytest.mark.unix_only
TIMEOUT = 10.0


def _until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.01)


def _mp(code: str, heapsize: str = "1m") -> str:
    """Run code in the Unix-port interpreter with the firmware on its path."""
    prelude = f"import sys; sys.path.insert(0, {str(FIRMWARE_DIR)!r})\n"
    r = subprocess.run(
        [find_micropython(), "-X", f"heapsize={heapsize}", "-c", prelude + code],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr or r.stdout
    return r.stdout.strip()


# -- keepalive -------------------------------------------------------------------

KEEPALIVE_SIM = """
import mqtt_proto
def run(ka_s, step_ms, heard_at_s=()):
    # ticks of step_ms with no packet (but at heard_at_s): (first ping s, dead s)
    t = [0, 0]
    ping = dead = None
    now = 0
    while dead is None and now < 3 * ka_s * 1000:
        now += step_ms
        what = mqtt_proto.keepalive(t, ka_s * 1000, step_ms, now // 1000 in heard_at_s)
        if what == 1 and ping is None:
            ping = now // 1000
        if what == 2:
            dead = now // 1000
    return ping, dead
for ka in (30, 600, 65535):
    print(ka, *run(ka, 5000))
print("heard", *run(600, 5000, (800,)))
"""


def test_keepalive_pings_at_half_and_gives_up_after_one_and_a_half_for_any_keepalive() -> None:
    # A difference of ticks_us over 1.5 x 600 s leaves ticks_diff's range (2**29 us
    # on an ESP32): the timer counts milliseconds between its own short ticks.
    out = dict(line.split(" ", 1) for line in _mp(KEEPALIVE_SIM).splitlines())
    for ka in (30, 600, 65535):
        ping, dead = (int(x) for x in out[str(ka)].split())
        assert ping == -(-ka // 2 // 5) * 5  # the first tick at or after half a keepalive
        assert ka * 1.5 < dead <= ka * 1.5 + 5
    ping, dead = (int(x) for x in out["heard"].split())
    assert dead > 800 + 900  # a packet at 800 s starts the silence again


def test_a_device_with_a_600_s_keepalive_connects_and_works(device_factory: DeviceFactory) -> None:
    dev = device_factory(keepalive=600)
    dev.wait_mqtt()
    assert dev.set("ON", 5).get("state") == "ON"


# -- PUBLISH packets ---------------------------------------------------------------

PUBLISH_CASES = """
import mqtt_proto
for k, (tl, ml, pid, ack) in enumerate(((5, 10, 0, 0), (5, 10, 0, 7), (5, 10, 300, 0), (30, 200, 0, 9),
                                         (100, 20000, 2, 0), (10, 2097140, 0, 0))):
    p = mqtt_proto.publish(mqtt_proto._str("t" * tl), b"m" * ml, True, pid, ack)
    with open(OUT + "/%d" % k, "wb") as f:
        f.write(p)
    print(tl, ml, pid, ack)
"""


def _packets(stream: bytes) -> list[bytes]:
    """A byte stream cut into its MQTT packets by the host's own framing (the fault proxy's)."""
    out: list[bytes] = []
    cur = bytearray()
    for piece in MqttFramer().split(stream):
        assert piece.framed, "not MQTT"
        cur += piece.data
        if piece.end:
            out.append(bytes(cur))
            cur.clear()
    assert not cur, f"{len(cur)} bytes left over after the last whole packet"
    return out


def test_a_publish_is_framed_as_mqtt_says_whatever_the_length_of_its_remaining_length(tmp_path: Path) -> None:
    """The firmware builds each PUBLISH in one buffer, its remaining length (1 to 4 bytes, 7 bits a
    byte) written in place: read back by the host's MQTT framing at lengths whose encoding takes 1,
    2, 3 and 4 bytes, at QoS 1, and with a QoS 0 one's PUBACK after it."""
    out = _mp(f"OUT = {str(tmp_path)!r}\n" + PUBLISH_CASES, heapsize="8m").splitlines()
    assert len(out) == 6
    for k, line in enumerate(out):
        tl, ml, pid, ack = (int(x) for x in line.split())
        publish, *rest = _packets((tmp_path / str(k)).read_bytes())
        assert publish[0] == (0x33 if pid else 0x31), line  # retained; QoS 1 with a packet id
        assert mqtt_publish_topic(publish) == "t" * tl, line
        assert mqtt_publish_payload(publish) == b"m" * ml, line
        if pid:
            assert publish[-ml - 2 : -ml] == pid.to_bytes(2, "big"), line
        assert rest == ([b"\x40\x02" + ack.to_bytes(2, "big")] if ack else []), line


# -- sockets ---------------------------------------------------------------------


def _sockets(dev: Device) -> int:
    assert dev.unix is not None and dev.unix.proc is not None
    fd_dir = Path(f"/proc/{dev.unix.proc.pid}/fd")
    n = 0
    for fd in os.listdir(fd_dir):
        with contextlib.suppress(OSError):  # closed meanwhile
            n += os.readlink(fd_dir / fd).startswith("socket:")
    return n


def test_a_dead_link_frees_its_socket_at_once_not_at_the_next_collection(device_factory: DeviceFactory) -> None:
    # MicroPython's Stream.close() does not close the socket; lwIP has only a
    # few. While the broker is away the device retries with backoff: between
    # attempts it must hold no socket at all.
    with start_broker("mosquitto") as b:
        dev = device_factory(broker=b.info)
        dev.wait_mqtt()
        assert _sockets(dev) == 1
        since = dev.log.cursor
        b.stop()
        dev.log.wait_for(lambda e: e.kind == "mqtt" and e.get("status") == "disconnected", TIMEOUT, "MQTT down", since)
        _until(lambda: _sockets(dev) == 0, TIMEOUT, "the device to hold no socket between reconnect attempts")


def test_sockets_do_not_pile_up_over_reconnects(device_factory: DeviceFactory, broker: RunningBroker) -> None:
    with FaultProxy(*broker.info.address).start() as proxy:
        dev = device_factory(broker=proxy.info_for(broker.info))
        dev.wait_mqtt()
        for _ in range(5):
            since = dev.log.cursor
            proxy.cut()
            dev.log.wait_for(lambda e: e.kind == "mqtt" and e.get("status") == "connected", 20, "MQTT back", since)
            assert _sockets(dev) == 1


# -- name resolution ---------------------------------------------------------------


def _down(e: Event) -> bool:
    return e.kind == "mqtt" and e.get("status") == "disconnected"


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")
def test_the_broker_name_is_resolved_once_not_at_every_reconnect(
    device_factory: DeviceFactory, broker: RunningBroker, tmp_path: Path
) -> None:
    # getaddrinfo blocks the whole event loop while DNS answers (seconds, on a
    # bad network). "localhost" resolves through /etc/hosts: each resolution
    # opens it, which strace sees.
    with FaultProxy(*broker.info.address).start() as proxy:
        dev = device_factory(broker=proxy.info_for(broker.info), config={"mqtt": {"host": "localhost"}})
        dev.wait_mqtt()
        assert dev.unix is not None and dev.unix.proc is not None
        log = tmp_path / "strace.log"
        tracer = subprocess.Popen(
            ["strace", "-f", "-e", "trace=openat,open", "-o", str(log), "-p", str(dev.unix.proc.pid)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert tracer.stderr is not None
            line = tracer.stderr.readline()  # "strace: Process N attached"
            assert "attached" in line, line
            for _ in range(3):  # links that drop; the reconnect finds the broker at once
                since = dev.log.cursor
                proxy.cut()
                dev.log.wait_for(lambda e: e.kind == "mqtt" and e.get("status") == "connected", 20, "MQTT back", since)
            since = dev.log.cursor
            proxy.cut(refuse=True)  # a failed connect: the next attempt resolves again
            down = dev.log.wait_for(_down, TIMEOUT, "the link down", since)
            dev.log.wait_for(_down, TIMEOUT, "a failed reconnect attempt", down.index)
            proxy.refuse = False
            dev.log.wait_for(lambda e: e.kind == "mqtt" and e.get("status") == "connected", 20, "MQTT back", since)
        finally:
            tracer.terminate()
            tracer.wait(10)
        hosts = [ln for ln in log.read_text().splitlines() if "/etc/hosts" in ln]
        assert 1 <= len(hosts) <= 2, hosts  # after the refused attempt(s) only, not per reconnect
