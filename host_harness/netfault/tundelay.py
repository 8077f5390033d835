"""Delay packets through a TUN device: the project's own netem for kernels without it.

The forwarder runs inside the link's middle namespace (see ``links``), where
policy routing sends every packet arriving from either veth into the TUN
device ``dev``. It reads each IPv4 packet, holds it until its release time and
writes it back into the TUN device; the kernel then routes it on as if it had
just arrived. Which way a packet goes is told by its destination: inside
``device_net`` is towards the device ("down"), anything else is "up".

Delays follow a round-trip-time profile (quantile knots, in ms), as the
published measurements are pings. A round trip draws one value from it and
splits it half each way: the packet that opens an exchange waits half, and the
next packet back on the same flow (addresses and ports swapped) waits the
other half. So a ping or a request/response sees the profile's round trip
exactly, and each direction alone half of it. (Two independent one-way draws
would sum to a thinner tail than the one measured.)

Order is kept per flow (protocol, addresses, ports or ICMP id): a packet is
never released before an earlier one of its flow, as a Wi-Fi link delivers in
order (block-ack reordering) and a reordering link would add TCP effects of
its own. A packet that arrives while an earlier one of its flow and direction
is still held draws no delay of its own: it leaves right behind it, in the
same burst (a TCP ACK and the next message sent together would otherwise
each draw a delay and the message pay the larger of the two). Different
flows overtake each other freely.

Power save (``wake_ms``): packets towards the device are held until the next
wake-up of its radio, on a fixed grid of ``wake_ms`` (a beacon interval times
the DTIM / listen interval) from the forwarder's start, as an access point
buffers frames for a sleeping station; packets from the device leave at once
(the station wakes to send).

Asked to (``log``: a file), it appends a record per packet that carried data
(``packetlog``): when it came, when it left, and its first bytes, so a
benchmark can tell the link's share of each journey from the rest.

Run as a child process (``python -m host_harness.netfault.tundelay CONFIG``);
it dies with its parent (PR_SET_PDEATHSIG) and prints ``ready`` once the TUN
device is open.
"""

from __future__ import annotations

import bisect
import collections
import contextlib
import ctypes
import fcntl
import heapq
import ipaddress
import json
import os
import random
import select
import signal
import socket
import struct
import sys
import time
from collections.abc import Sequence

from host_harness.netfault import packetlog

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
PR_SET_PDEATHSIG = 1
PR_SET_TIMERSLACK = 29
RT_PRIORITY = 10  # low among real-time tasks; the loop sleeps in select between packets
PAIR_S = 2.0  # an answer later than this draws afresh
STRATA = 1000  # draws per stratified block
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4  # sll_pkttype of a packet the kernel sends out of the interface
SO_TIMESTAMPNS = 35
MAX_QUEUE = 4096  # packets held at once; beyond that new ones are dropped, as a full buffer does

Knots = Sequence[tuple[float, float]]  # (quantile 0..1, ms), quantiles rising from 0 to 1


class Quantiles:
    """A piecewise-linear quantile function: draw by inverse transform."""

    def __init__(self, knots: Knots) -> None:
        ps = [p for p, _ in knots]
        if ps[0] != 0.0 or ps[-1] != 1.0 or ps != sorted(ps):
            raise ValueError(f"quantile knots must rise from 0 to 1, got {ps}")
        self.ps = ps
        self.vs = [max(0.0, v) for _, v in knots]

    def at(self, u: float) -> float:
        i = min(len(self.ps) - 2, max(0, bisect.bisect_right(self.ps, u) - 1))
        p0, p1 = self.ps[i], self.ps[i + 1]
        v0, v1 = self.vs[i], self.vs[i + 1]
        return v0 + (v1 - v0) * ((u - p0) / (p1 - p0) if p1 > p0 else 0.0)

    def draw(self, rng: random.Random) -> float:
        return self.at(rng.random())


class Stratified:
    """Uniform draws, each block of ``block`` taking one from every 1/block slice, in random order.

    The marginal distribution is the same as plain draws; a short run (a few
    hundred round trips) then shows the profile's quantiles instead of the
    sampling noise of its thin tail.
    """

    def __init__(self, rng: random.Random, block: int = STRATA) -> None:
        self.rng = rng
        self.block = block
        self.order: list[int] = []

    def __call__(self) -> float:
        if not self.order:
            self.order = list(range(self.block))
            self.rng.shuffle(self.order)
        return (self.order.pop() + self.rng.random()) / self.block


def flow_key(pkt: bytes) -> tuple[int, bytes, int]:
    """(protocol, addresses, ports or ICMP id) of an IPv4 packet."""
    if len(pkt) < 20 or pkt[0] >> 4 != 4:
        return (-1, b"", 0)
    ihl = (pkt[0] & 0x0F) * 4
    proto = pkt[9]
    l4 = pkt[ihl : ihl + 8]
    if proto in (6, 17) and len(l4) >= 4:
        extra = struct.unpack("!I", l4[:4])[0]
    elif proto == 1 and len(l4) >= 6:
        extra = struct.unpack("!H", l4[4:6])[0]
    else:
        extra = 0
    return (proto, pkt[12:20], extra)


def reverse(key: tuple[int, bytes, int]) -> tuple[int, bytes, int]:
    """The flow key of the answers to ``key``'s packets."""
    proto, addrs, extra = key
    if proto in (6, 17):
        extra = ((extra & 0xFFFF) << 16) | (extra >> 16)
    return (proto, addrs[4:8] + addrs[0:4], extra)


class Scheduler:
    """Release times for packets: the delay model, power save and per-flow order."""

    def __init__(self, config: dict[str, object], now: float) -> None:
        rtt = config.get("rtt")
        self.rtt = Quantiles([(float(p), float(v)) for p, v in rtt]) if rtt else None  # type: ignore[union-attr]
        wake = config.get("wake_ms")
        self.wake_s = float(wake) / 1000.0 if wake else None  # type: ignore[arg-type]
        self.epoch = now
        self.rng = random.Random(int(config.get("seed", 1)))  # type: ignore[call-overload]
        self.uniform = Stratified(self.rng)
        net = ipaddress.ip_network(str(config["device_net"]))
        self.net = (int(net.network_address), int(net.netmask))
        self.last: dict[tuple[int, bytes, int], float] = {}
        self.owed: dict[tuple[int, bytes, int], tuple[float, float]] = {}  # flow -> (delay s, drawn at)
        self.queued = False  # the last packet released left behind an earlier one of its flow

    def towards_device(self, pkt: bytes) -> bool:
        if len(pkt) < 20:
            return False
        dst = struct.unpack("!I", pkt[16:20])[0]
        return dst & self.net[1] == self.net[0]

    def release(self, pkt: bytes, now: float) -> float:
        t = now
        key = flow_key(pkt)
        held = self.last.get(key, 0.0)
        self.queued = held > now
        if self.queued:
            # The flow's previous packet this way is still held: this one is
            # queued behind it and leaves in the same burst, with no delay of
            # its own (a radio sends what is queued together; two independent
            # draws would make a packet pay the larger of two link delays).
            return held
        if self.rtt is not None:
            owed = self.owed.pop(key, None)
            if owed is not None and now - owed[1] < PAIR_S:
                t += owed[0]
            else:
                half = self.rtt.at(self.uniform()) / 2000.0
                self.owed[reverse(key)] = (half, now)
                t += half
        if self.wake_s and self.towards_device(pkt):
            k = -(-(t - self.epoch) // self.wake_s)  # ceil: the next wake-up
            t = self.epoch + k * self.wake_s
        t = max(t, self.last.get(key, 0.0))
        self.last[key] = t
        if len(self.last) > 10000:
            self.last = {k: v for k, v in self.last.items() if v > now}
            self.owed = {k: v for k, v in self.owed.items() if now - v[1] < PAIR_S}
        return t


def open_tun(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


def _die_with_parent(parent: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl
        sys.exit(0)


def _be_timely() -> str:
    """Wake on time on a busy machine: a real-time priority when allowed, else a high nice."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_TIMERSLACK, 1, 0, 0, 0)  # 1 ns instead of 50 µs
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(RT_PRIORITY))
        return "SCHED_FIFO"
    except (OSError, AttributeError):
        with contextlib.suppress(OSError):
            os.nice(-10)
        return "nice"


class Arrivals:
    """When the kernel routed each packet into the TUN device, not when this loop woke to read it.

    A packet socket on the TUN device sees every packet the kernel sends into
    it (``PACKET_OUTGOING``), stamped by the kernel as it goes. Delays are drawn
    from that moment, so the forwarder's own wake-up (0.1 ms and more on an
    idle machine) is inside the delay asked for instead of added to it. Where
    the socket cannot be had, or misses a packet, the read time stands in.
    """

    def __init__(self, dev: str) -> None:
        self.sock: socket.socket | None = None
        self.seen: collections.deque[tuple[bytes, float]] = collections.deque(maxlen=MAX_QUEUE)
        try:
            s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
            s.bind((dev, 0))
            s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            s.setblocking(False)
            self.sock = s
        except (OSError, AttributeError):
            pass

    def _drain(self) -> None:
        s = self.sock
        if s is None:
            return
        off = time.time_ns() - time.monotonic_ns()  # the stamps are wall-clock time
        for _ in range(1024):
            try:
                data, anc, _, addr = s.recvmsg(65536, socket.CMSG_SPACE(16))
            except BlockingIOError:
                return
            if addr[2] != PACKET_OUTGOING:
                continue  # what this forwarder writes back into the device
            stamp = next((c[2] for c in anc if c[0] == socket.SOL_SOCKET and c[1] == SO_TIMESTAMPNS), None)
            if stamp is not None and len(stamp) >= 16:
                sec, nsec = struct.unpack("qq", stamp[:16])
                self.seen.append((data, (sec * 1_000_000_000 + nsec - off) / 1e9))

    def of(self, pkt: bytes, now: float) -> float:
        """The kernel's time for ``pkt`` (read from the TUN device just now), else ``now``."""
        for attempt in (0, 1):
            if attempt or not self.seen:
                self._drain()
            while self.seen:
                data, t = self.seen.popleft()
                if data == pkt:
                    return min(t, now)
        return now


def serve(config: dict[str, object]) -> None:
    fd = open_tun(str(config["dev"]))
    arrivals = Arrivals(str(config["dev"]))
    _be_timely()
    sched = Scheduler(config, time.monotonic())
    log = os.open(str(config["log"]), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600) if config.get("log") else None
    held: list[tuple[float, int, bytes, float, bool]] = []  # release at, seq, packet, arrived at, queued
    seq = 0
    print("ready", flush=True)
    while True:
        now = time.monotonic()
        while held and held[0][0] <= now:
            _, _, pkt, came, queued = heapq.heappop(held)
            if log is not None and (data := packetlog.payload(pkt)):
                # Recorded before it is let go, so that whoever receives it finds its record;
                # stamped now, when it really leaves, late wake-ups of this loop included.
                left = time.monotonic()
                os.write(log, packetlog.pack(int(came * 1e9), int(left * 1e9), sched.towards_device(pkt), queued, data))
            with contextlib.suppress(OSError):  # refused (e.g. the device going down): a lost packet
                os.write(fd, pkt)
        timeout = max(0.0, held[0][0] - now) if held else 1.0
        r, _, _ = select.select([fd], [], [], timeout)
        if not r:
            continue
        now = time.monotonic()
        for _ in range(256):
            try:
                pkt = os.read(fd, 65536)
            except BlockingIOError:
                break
            if len(held) >= MAX_QUEUE:
                continue
            seq += 1
            came = arrivals.of(pkt, now)
            at = sched.release(pkt, came)
            heapq.heappush(held, (at, seq, pkt, came, sched.queued))


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m host_harness.netfault.tundelay CONFIG_JSON", file=sys.stderr)
        return 2
    config = json.loads(argv[1])
    if "parent" in config:
        _die_with_parent(int(config["parent"]))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        serve(config)
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
