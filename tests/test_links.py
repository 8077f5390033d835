"""Packet-level links with the real kernel TCP stack: namespaces, veth, nft loss, TUN delay.

Needs root (network namespaces); skipped with the reason otherwise. Delays are
checked on real ICMP pings from the device's namespace, many in parallel
flows, and on MQTT journeys of a Unix-port device behind the link.
"""

from __future__ import annotations

import json
import os
import pathlib
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from host_harness.broker.mosquitto import find_mosquitto
from host_harness.broker.start import start_broker
from host_harness.core.budgets import evaluate, for_board
from host_harness.core.diagnose import BEACON, NAGLE, POLLING, RETRANSMISSION, diagnose
from host_harness.core.results import JourneyRun
from host_harness.dut.boards import load as load_board
from host_harness.dut.device import Device, open_device
from host_harness.link.mqtt_client import HostMqtt
from host_harness.measure.clocksync import clock_for
from host_harness.measure.journeys import Journeys
from host_harness.measure.load import closed_loop
from host_harness.netfault import attach, packetlog
from host_harness.netfault.links import OWNERS, Link, LinkError, sweep_stale, unavailable_reason
from host_harness.netfault.probe import ping_rtts, quantile
from host_harness.netfault.profiles import PROFILES, Profile
from host_harness.netfault.tundelay import Quantiles

REASON = unavailable_reason() or ("" if shutil.which("ping") else "needs 'ping' (iputils-ping)")
pytestmark = pytest.mark.skipif(bool(REASON), reason=REASON or "available")


def assert_quantiles(measured: list[float], asked: dict[str, float], tolerance: float = 0.10) -> None:
    got = {name: quantile(measured, float(name[1:]) / 100) for name in asked}
    for name, want in asked.items():
        assert abs(got[name] - want) <= tolerance * want, f"{name}: measured {got[name]:.1f} ms, asked {want:.1f} ms"


def gone(link: Link) -> None:
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert link.dev_ns not in names and link.mid_ns not in names, names
    assert subprocess.run(["ip", "link", "show", link.root_if], capture_output=True).returncode != 0


# -- the link itself ------------------------------------------------------------


@pytest.mark.parametrize("name", ["wifi-near", "wifi-wall"])
def test_round_trips_have_the_profiles_published_quantiles(name: str) -> None:
    prof = PROFILES[name]
    with Link(prof, seed=11) as link:
        # 30 flows x 100 pings = 3 000 round trips; each flow's pings far enough apart not to queue.
        interval = max(0.05, dict(prof.rtt_ms or ())[1.0] / 1000.0 + 0.01)
        rtts, sent = ping_rtts(link, 30, 100, interval)
    gone(link)
    assert len(rtts) == sent
    assert_quantiles(rtts, prof.asked())


def test_lan_adds_next_to_nothing() -> None:
    with Link("lan") as link:
        rtts, sent = ping_rtts(link, 4, 50, 0.01)
    assert len(rtts) == sent
    assert quantile(rtts, 0.5) < 2.0  # a veth pair and a router namespace: well under a millisecond


def test_power_save_holds_frames_to_the_device_until_its_radio_wakes() -> None:
    prof = PROFILES["wifi-powersave"]
    assert prof.wake_ms and prof.rtt_ms
    with Link(prof, seed=12) as link:
        rtts, sent = ping_rtts(link, 20, 50, 0.21)
    assert len(rtts) == sent
    # Asked: the awake round trip plus a wait for the next wake-up, from a random phase.
    rng = random.Random(1)
    q = Quantiles(prof.rtt_ms)
    model = [q.draw(rng) + prof.wake_ms * rng.random() for _ in range(100_000)]
    assert_quantiles(rtts, {m: quantile(model, float(m[1:]) / 100) for m in ("p50", "p90")})
    assert max(rtts) <= prof.wake_ms + q.vs[-1] + 5.0
    assert [d.culprit for d in diagnose(rtts)] == [BEACON]


def test_loss_drops_packets_each_way_at_the_asked_rate() -> None:
    prof = PROFILES["wifi-lossy"]
    with Link(prof, seed=13) as link:
        rtts, sent = ping_rtts(link, 20, 100, 0.01)
    lost = 1 - len(rtts) / sent
    both_ways = 1 - (1 - prof.loss_pct / 100) ** 2  # a ping is lost when either its request or its reply is
    assert abs(lost - both_ways) <= 0.035, f"lost {lost:.1%} of {sent} pings, expected {both_ways:.1%}"


def test_a_partition_drops_silently_on_the_far_side_and_heals() -> None:
    with Link("lan") as link:
        link.partition()
        p = subprocess.run(
            [*link.prefix(), "ping", "-n", "-c", "3", "-i", "0.2", "-W", "1", link.broker_ip],
            capture_output=True,
            text=True,
        )
        assert p.returncode == 1 and "100% packet loss" in p.stdout
        assert p.stderr == "", "the device's own interface must not fail its sends"
        link.heal()
        rtts, sent = ping_rtts(link, 1, 3, 0.2)
        assert len(rtts) == sent


ECHO_CLIENT = """
import json, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
out = []
for i in range(int(sys.argv[3])):
    t = time.monotonic_ns()
    s.sendto(b"m-%d;" % i, (sys.argv[1], int(sys.argv[2])))
    s.recvfrom(64)
    out.append((time.monotonic_ns() - t) / 1e6)
print(json.dumps(out))
"""


def test_the_packet_log_accounts_for_each_round_trip() -> None:
    prof = PROFILES["wifi-near"]
    srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stop = threading.Event()

    def echo() -> None:
        while not stop.is_set():
            try:
                data, addr = srv.recvfrom(64)
            except TimeoutError:
                continue
            srv.sendto(data, addr)

    with Link(prof, seed=21, log=True) as link:
        assert link.packets is not None
        log = link.packets.path
        srv.bind((link.broker_ip, 0))
        srv.settimeout(0.2)
        t = threading.Thread(target=echo, daemon=True)
        t.start()
        try:
            p = subprocess.run(
                [*link.prefix(), sys.executable, "-c", ECHO_CLIENT, link.broker_ip, str(srv.getsockname()[1]), "300"],
                capture_output=True,
                text=True,
                timeout=120,
            )
        finally:
            stop.set()
            t.join(5)
            srv.close()
        assert p.returncode == 0, p.stderr
        rtts = json.loads(p.stdout)
        packets = link.packets.read()
    assert not log.exists(), "the log goes with the link"
    crossings = [packetlog.crossing(packets, b"m-%d;" % i, False) for i in range(len(rtts))]
    assert all(c is not None for c in crossings), "every datagram and its echo are in the log"
    link_ms = [c.link_ms for c in crossings if c is not None]
    rest = [r - m for r, m in zip(rtts, link_ms, strict=True)]
    # The forwarder's two delays are inside the round trip the client timed...
    assert min(rest) >= 0, f"a logged delay longer than its round trip: {min(rest):.3f} ms"
    # ...and are nearly all of it: what is left (two veth crossings, the echo) is a small part...
    assert quantile(rest, 0.5) <= 0.1 * quantile(link_ms, 0.5)
    # ...and they follow the profile's round trips.
    assert_quantiles(link_ms, {k: v for k, v in prof.asked().items() if k in ("p50", "p90")})


ONE_ECHO = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
print("ready", flush=True)
sys.stdin.readline()
t = time.monotonic_ns()
s.sendto(b"one", (sys.argv[1], int(sys.argv[2])))
s.recvfrom(64)
print((time.monotonic_ns() - t) / 1e6, flush=True)
"""


def test_a_forwarder_that_wakes_late_still_delays_from_the_packets_arrival() -> None:
    # The delay is drawn from when the kernel routed the packet into the TUN
    # device: the forwarder stopped for 60 ms when a datagram comes (an idle
    # CPU waking, at a far smaller scale) must not add its stall to the 200 ms asked.
    prof = Profile("flat", "200 ms round trip", ((0.0, 200.0), (1.0, 200.0)))
    srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with Link(prof, seed=1) as link:
        srv.bind((link.broker_ip, 0))
        srv.settimeout(5)
        client = subprocess.Popen(
            [*link.prefix(), sys.executable, "-c", ONE_ECHO, link.broker_ip, str(srv.getsockname()[1])],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert client.stdin is not None and client.stdout is not None
        assert client.stdout.readline().strip() == "ready"
        fwd = link._forwarder
        assert fwd is not None
        os.kill(fwd.pid, signal.SIGSTOP)
        try:
            client.stdin.write("go\n")
            client.stdin.flush()
            time.sleep(0.06)  # the stall itself
        finally:
            os.kill(fwd.pid, signal.SIGCONT)
        data, addr = srv.recvfrom(64)
        srv.sendto(data, addr)
        rtt = float(client.stdout.readline())
        client.wait(10)
    srv.close()
    assert 200.0 <= rtt < 240.0, f"round trip {rtt:.1f} ms: the forwarder's 60 ms stall was added to the 200 ms asked"


def test_everything_is_removed_also_after_an_exception() -> None:
    with pytest.raises(RuntimeError, match="inside"), Link("wifi-near") as link:
        assert link.dev_ns in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        raise RuntimeError("inside the link")
    gone(link)


def test_an_unknown_profile_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown link profile 'wifi-moon'; choose from lan, wifi-near"):
        attach.open_link("wifi-moon")


def test_netem_is_refused_clearly_where_the_kernel_has_none() -> None:
    link = Link(Profile("t", "test", PROFILES["wifi-near"].rtt_ms), delay="netem")
    try:
        link.up()
    except LinkError as e:
        assert "netem" in str(e)
        gone(link)
    else:  # this kernel has netem: it must give the median it was asked for
        with link:
            rtts, _ = ping_rtts(link, 10, 50, 0.1)
        assert_quantiles(rtts, {"p50": PROFILES["wifi-near"].asked()["p50"]})


# -- TCP over the link: the 40 ms Nagle / delayed-ACK stall -------------------------------

CLIENT = r"""
import socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
out = []
for i in range(int(sys.argv[3])):
    t = time.monotonic()
    s.sendall(b"q" * 20)
    got = b""
    while len(got) < 30:
        got += s.recv(64)
    out.append((time.monotonic() - t) * 1000)
print(" ".join("%.3f" % x for x in out))
"""


def request_response(link: Link, nodelay: bool, n: int = 40) -> list[float]:
    """Round trips of a request answered in two small writes (a header, then the body)."""
    srv = socket.create_server((link.broker_ip, 0))
    port = srv.getsockname()[1]

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            if nodelay:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for _ in range(n):
                got = b""
                while len(got) < 20:
                    chunk = conn.recv(64)
                    if not chunk:
                        return
                    got += chunk
                conn.sendall(b"h" * 10)  # header ...
                conn.sendall(b"b" * 20)  # ... body: Nagle holds it until the header is acknowledged

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        p = subprocess.run(
            [*link.prefix(), sys.executable, "-c", CLIENT, link.broker_ip, str(port), str(n)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert p.returncode == 0, p.stderr
    finally:
        t.join(10)
        srv.close()
    return [float(x) for x in p.stdout.split()]


def test_nagle_meeting_delayed_ack_is_recognised_and_nodelay_cures_it() -> None:
    with Link("lan") as link:
        stalled = request_response(link, nodelay=False)
        cured = request_response(link, nodelay=True)
    assert NAGLE in [d.culprit for d in diagnose(stalled)], sorted(stalled)
    assert diagnose(cured) == [], sorted(cured)


# -- MQTT journeys of a Unix-port device behind the link ------------------------------------


needs_mosquitto = pytest.mark.skipif(
    find_mosquitto() is None, reason="needs Mosquitto (the embedded amqtt cannot listen on the link)"
)


# Mosquitto with TCP_NODELAY: the link's own effects, without the 40 ms Nagle stall a stock
# Mosquitto can add on top (that stall is produced and diagnosed on its own).
BROKER = "mosquitto-tuned"


def behind(name: str, count: int, seed: int = 5) -> tuple[JourneyRun, Link]:
    """``count`` closed-loop MQTT journeys of a Unix-port device behind link ``name``."""
    with (
        attach.open_link(name, seed=seed) as link,
        start_broker(BROKER, **attach.broker_options(link, BROKER)) as broker,
    ):
        dev: Device = open_device("unix", "unix", attach.device_broker(link, broker), prefix=link.prefix())
        try:
            dev.wait_mqtt()
            mq = HostMqtt(broker.info, "link").connect()
            try:
                attach.wait_across(dev, mq)
                js = Journeys(dev, mq, timeout=10)
                run = closed_loop(js, "mqtt", count, clock_for(dev, mq)[0])
            finally:
                mq.close()
        finally:
            dev.close()
    return run, link


@pytest.mark.needs_process  # its own device behind a link
@needs_mosquitto
def test_mqtt_journeys_cross_wifi_near_and_both_hops_carry_its_delay() -> None:
    run, link = behind("wifi-near", 60)
    gone(link)
    assert not run.lost and len(run.journeys) == 60
    lan_floor = 2.0  # ms: a journey's hop on the bare veth path is far below this
    for hop in ("host_to_device", "device_to_host"):
        assert run.hop(hop).p50 > lan_floor, f"{hop} does not carry the link's delay: {run.hop(hop)}"
    v = evaluate(run, for_board(load_board("unix"), link="wifi-near").for_kind("mqtt"))
    assert v.ok, v.message()


@pytest.mark.needs_process  # its own device behind a link
@needs_mosquitto
def test_lossy_link_breaks_the_lan_budget_and_the_verdict_names_retransmissions() -> None:
    run, _ = behind("wifi-lossy", 150)
    assert not run.lost
    v = evaluate(run, for_board(load_board("unix")).for_kind("mqtt"))
    assert not v.ok, v.message()
    assert any("retransmission" in line for line in v.diagnosis), v.message()
    assert RETRANSMISSION in [d.culprit for d in diagnose([j.e2e_ms for j in run.journeys])]


@pytest.mark.needs_process  # its own device behind a link
@needs_mosquitto
def test_power_save_breaks_the_lan_budget_and_the_verdict_names_the_sleeping_radio() -> None:
    run, _ = behind("wifi-powersave", 25)
    assert not run.lost
    v = evaluate(run, for_board(load_board("unix")).for_kind("mqtt"))
    assert not v.ok
    assert any("beacons" in line for line in v.diagnosis), v.message()


SENDER = r"""
import socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
t = time.monotonic()
s.sendall(b"x" * int(sys.argv[3]))
s.shutdown(socket.SHUT_WR)
s.recv(1)  # the receiver's word that it has everything
print("%.4f" % (time.monotonic() - t))
"""


def test_rate_limits_throughput_with_tbf() -> None:
    rate_kbit, size = 4000, 400_000  # 0.8 s of data at the asked rate
    with Link(Profile("slow", "test: tbf only", rate_kbit=rate_kbit)) as link:
        srv = socket.create_server((link.broker_ip, 0))
        got = bytearray()

        def receive() -> None:
            conn, _ = srv.accept()
            with conn:
                while chunk := conn.recv(65536):
                    got.extend(chunk)
                conn.sendall(b"k")

        t = threading.Thread(target=receive, daemon=True)
        t.start()
        p = subprocess.run(
            [*link.prefix(), sys.executable, "-c", SENDER, link.broker_ip, str(srv.getsockname()[1]), str(size)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        t.join(10)
        srv.close()
    assert p.returncode == 0, p.stderr
    assert len(got) == size
    kbit_s = size * 8 / 1000 / float(p.stdout)
    assert 0.75 * rate_kbit <= kbit_s <= 1.15 * rate_kbit, f"{kbit_s:.0f} kbit/s through a {rate_kbit} kbit/s link"


def test_polling_once_a_second_on_the_path_is_recognised() -> None:
    """A server that looks at its socket once a second (the culprit) answers in whole seconds."""
    with Link("lan") as link:
        srv = socket.create_server((link.broker_ip, 0))
        n = 6

        def serve() -> None:
            conn, _ = srv.accept()
            with conn:
                conn.setblocking(False)
                answered = 0
                while answered < n:
                    threading.Event().wait(1.0)  # the poll interval being diagnosed
                    try:
                        data = conn.recv(64)
                    except BlockingIOError:
                        continue
                    if not data:
                        return
                    conn.sendall(b"h" * 30)
                    answered += 1

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        p = subprocess.run(
            [*link.prefix(), sys.executable, "-c", CLIENT, link.broker_ip, str(srv.getsockname()[1]), str(n)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        t.join(10)
        srv.close()
    assert p.returncode == 0, p.stderr
    samples = [float(x) for x in p.stdout.split()]
    assert [d.culprit for d in diagnose(samples)] == [POLLING], samples


HERE = pathlib.Path(__file__).resolve().parent
RUN = [sys.executable, "-m", "host_harness", "run"]
PYTEST = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]


@pytest.mark.needs_process  # its own device behind a link
@needs_mosquitto
def test_run_and_the_plugin_take_a_link_profile(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "run.json"
    p = subprocess.run(
        [
            *RUN,
            "--link",
            "wifi-near",
            "--broker",
            BROKER,
            "--journeys",
            "mqtt",
            "--count",
            "20",
            "--warmup",
            "2",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert "link wifi-near" in p.stdout and "[link.wifi-near]" in p.stdout
    data = json.loads(out.read_text())
    assert data["meta"]["link"] == "wifi-near"
    assert data["runs"][0]["hops_ms"]["host_to_device"]["p50"] > 2.0
    p = subprocess.run(
        [*PYTEST, "--lightctl-link", "wifi-near", str(HERE / "test_mqtt_journeys.py"), "-k", "many_journeys_alternate"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=HERE.parent,
    )
    assert p.returncode == 0 and "1 passed" in p.stdout, p.stdout[-2000:]
    assert _links_of_dead_owners() == [], "a finished run left its link behind"


def _links_of_dead_owners() -> list[str]:
    """Link namespaces whose owner process is gone (other tests may hold live links meanwhile)."""
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    left = []
    for ns in names:
        if not ns.startswith(("lc-dev-", "lc-mid-")):
            continue
        rec = OWNERS / ns.split("-", 2)[2]
        try:
            os.kill(int(rec.read_text().strip()), 0)
        except PermissionError:
            continue  # alive, someone else's
        except (OSError, ValueError):
            left.append(ns)  # no record, or its owner is gone
    return left


OWNER = r"""
import sys
from host_harness.netfault.links import Link
link = Link("wifi-near").up()
print(link.tag, flush=True)
sys.stdin.read()  # held until killed
"""


def test_a_link_whose_owner_was_killed_is_swept_by_the_next() -> None:
    owner = subprocess.Popen([sys.executable, "-c", OWNER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert owner.stdout is not None
    tag = owner.stdout.readline().strip()
    assert tag, "the owner process made no link"
    owner.kill()  # SIGKILL: no teardown runs
    owner.wait(10)
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"lc-dev-{tag}" in names, "the killed owner's namespaces should still be there before the sweep"
    assert tag in sweep_stale()
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"lc-dev-{tag}" not in names and f"lc-mid-{tag}" not in names, names
    assert subprocess.run(["ip", "link", "show", f"lcr-{tag}"], capture_output=True).returncode != 0


@pytest.mark.needs_process  # its own device behind a link, twice
@needs_mosquitto
def test_a_stock_broker_sending_commands_together_across_a_slow_link_is_named_with_its_fix() -> None:
    # 100 commands/s across wifi-near (a round trip of 13 ms at p50): a stock Mosquitto's
    # Nagle holds each command while the one before is unacknowledged, and sends the held
    # ones together; with TCP_NODELAY each goes on its own. The link's packet record shows it.
    out = {}
    for broker in ("mosquitto", "mosquitto-tuned"):
        r = subprocess.run(
            [sys.executable, "-m", "host_harness", "run", "--link", "wifi-near", "--rate", "100", "--count", "150",
             "--journeys", "mqtt", "--warmup", "2", "--no-budget", "--broker", broker],
            capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert r.returncode == 0, r.stdout + r.stderr
        (line,) = [x for x in r.stdout.splitlines() if x.startswith("link: ")]
        out[broker] = line
    stock, tuned = out["mosquitto"], out["mosquitto-tuned"]
    m = re.search(r"150 commands crossed the link in (\d+) TCP segments", stock)
    assert m and int(m.group(1)) <= 135, stock  # at least one in ten held and sent with another
    assert "the broker sending commands together" in stock and "set_tcp_nodelay true" in stock, stock
    assert tuned == "link: each of 150 commands crossed towards the device in a TCP segment of its own", tuned


@pytest.mark.needs_process  # a pytest run of its own, its device behind a link
@needs_mosquitto
def test_the_plugins_broken_budget_behind_a_link_names_the_broker_sending_commands_together(
    tmp_path: pathlib.Path,
) -> None:
    # The plugin reads the link's packet record in assert_budget: the count goes in the
    # JUnit properties, and the culprit with its fix in the failure.
    (tmp_path / "test_rate.py").write_text(
        "from host_harness.measure.load import open_loop_mqtt\n\n\n"
        "def test_100_per_s(journey, device_clock, assert_budget):\n"
        "    assert_budget(open_loop_mqtt(journey, 100, 150, device_clock))\n"
    )
    (tmp_path / "budget.toml").write_text("[journey.mqtt]\np50 = 16.0\n")  # stock at 100/s: ~24 ms
    r = subprocess.run(
        [*PYTEST, "--lightctl-link", "wifi-near", "--lightctl-broker", "mosquitto", "--lightctl-budget",
         "budget.toml", "--junitxml", "out.xml", "test_rate.py"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert r.returncode == pytest.ExitCode.TESTS_FAILED, r.stdout[-3000:] + r.stderr[-2000:]
    assert "diagnosis: the broker sending commands together: 150 commands crossed the link in" in r.stdout, r.stdout
    assert "set_tcp_nodelay true" in r.stdout
    (prop,) = re.findall(r'name="mqtt.sent_together" value="(\d+)"', (tmp_path / "out.xml").read_text())
    assert int(prop) >= 15, prop
