"""A fault-injecting TCP proxy for MQTT links: latency, partitions, cuts, lost packets.

The harness puts a :class:`FaultProxy` between a client (the device, or the
host's paho client) and the broker to reproduce slow and broken networks::

    with FaultProxy(*broker.info.address).start() as proxy:
        dev = open_device(broker=proxy.info_for(broker.info))
        proxy.down.delay_s = 0.3           # broker -> device one-way latency
        proxy.set("both", blackhole=True)  # a partition TCP does not notice
        proxy.cut()                        # reset every connection (RST)
        proxy.drop_next_down(lambda p: (mqtt_publish_topic(p) or "").endswith("/state"))

Directions: ``"up"`` is client -> upstream (broker), ``"down"`` is
upstream -> client.  Each has its own :class:`Direction` (``proxy.up``,
``proxy.down``) whose settings may be changed at any time from any thread;
they apply to every connection, to bytes received after the change:

* ``delay_s``   -- fixed one-way latency: each chunk is delivered at
  *time received + delay*, so a delay holds every chunk that long without
  serialising chunks behind each other; the byte stream and its order are kept.
* ``jitter_s``  -- a uniform extra 0..jitter per chunk, still in order.
* ``blackhole`` -- received bytes (and a FIN) are silently dropped while it is
  on; the connection stays open.  Lifting it on a live connection may leave the
  receiver in the middle of a packet: follow it with :meth:`FaultProxy.cut`.
* ``paused``    -- received bytes are held and delivered, in order, when unpaused.
* ``drop_next(match, count)`` -- MQTT-aware: the stream is split into MQTT
  packets (fixed header + remaining-length framing, kept across chunk
  boundaries) and the next ``count`` whole packets for which ``match(packet)``
  is true are dropped.  Only meaningful on plain (non-TLS) MQTT streams.

All sockets use TCP_NODELAY, so the proxy adds no Nagle delay.  The proxy runs
an asyncio event loop in one background thread; :meth:`FaultProxy.stop` resets
all connections, closes the port and joins that thread.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import dataclasses
import logging
import math
import random
import socket
import struct
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Literal, Self

from .broker import BrokerInfo
from .events import WaitTimeout

__all__ = [
    "Direction",
    "DirectionStats",
    "DropRule",
    "FaultProxy",
    "MqttFramer",
    "ProxyStats",
    "mqtt_publish_payload",
    "mqtt_publish_topic",
]

log = logging.getLogger(__name__)

DirectionName = Literal["up", "down"]
Which = Literal["up", "down", "both"]
PacketMatch = Callable[[bytes], bool]

KIND_PROXY: Final = "proxy"
#: Seconds allowed for connecting upstream, for start() and for stop()/cut().
CONNECT_TIMEOUT: Final = 5.0
CONTROL_TIMEOUT: Final = 5.0
#: Bytes read from a socket at once.
READ_SIZE: Final = 65536
#: A pipe stops reading while this much is held (delay/pause) and resumes below LOW_WATER.
HIGH_WATER: Final = 4 * 1024 * 1024
LOW_WATER: Final = 1024 * 1024
_LINGER_RST: Final = struct.pack("ii", 1, 0)


# --------------------------------------------------------------------------
# MQTT framing
# --------------------------------------------------------------------------

_PUBLISH: Final = 0x30


def _split_publish(packet: bytes) -> tuple[str, bytes] | None:
    """(topic, payload) of one whole MQTT 3.1.1 PUBLISH packet, else None."""
    if len(packet) < 2 or packet[0] & 0xF0 != _PUBLISH:
        return None
    length, shift, i = 0, 0, 1
    while True:
        if i >= len(packet) or i > 4:
            return None
        b = packet[i]
        length |= (b & 0x7F) << shift
        i += 1
        if not b & 0x80:
            break
        shift += 7
    body = packet[i : i + length]
    if len(body) != length or length < 2:
        return None
    tlen = (body[0] << 8) | body[1]
    rest = 2 + tlen + (2 if packet[0] & 0x06 else 0)  # QoS > 0 has a packet id
    if rest > length:
        return None
    return body[2 : 2 + tlen].decode("utf-8", "replace"), bytes(body[rest:])


def mqtt_publish_topic(packet: bytes) -> str | None:
    """The topic of a whole MQTT PUBLISH packet, None for any other packet."""
    parsed = _split_publish(packet)
    return None if parsed is None else parsed[0]


def mqtt_publish_payload(packet: bytes) -> bytes | None:
    """The application payload of a whole MQTT PUBLISH packet, None for any other packet."""
    parsed = _split_publish(packet)
    return None if parsed is None else parsed[1]


@dataclass(frozen=True)
class Piece:
    """A run of bytes from one MQTT packet (or raw bytes once framing is lost)."""

    data: bytes
    start: bool  # the packet's first byte is in here
    end: bool  # the packet's last byte is in here
    framed: bool = True  # False: the stream is not MQTT, pass it through


class MqttFramer:
    """Splits a byte stream at MQTT packet boundaries, whatever the chunking.

    ``split(chunk)`` returns the chunk as pieces, each inside one packet.  A
    stream that cannot be MQTT (reserved packet type 0 or a remaining length
    longer than 4 bytes) turns the framer ``broken``: from then on it hands
    the bytes through unframed.
    """

    def __init__(self) -> None:
        self._header = bytearray()  # fixed header read so far
        self._need = 0  # body bytes still to come
        self._in_body = False
        self.broken = False

    def split(self, data: bytes) -> list[Piece]:
        out: list[Piece] = []
        i, n = 0, len(data)
        while i < n:
            if self.broken:
                out.append(Piece(data[i:], False, False, framed=False))
                break
            if self._in_body:
                k = min(self._need, n - i)
                self._need -= k
                end = self._need == 0
                self._in_body = not end
                out.append(Piece(data[i : i + k], False, end))
                i += k
                continue
            start = not self._header
            j = i
            complete = False
            while j < n:
                b = data[j]
                j += 1
                self._header.append(b)
                if len(self._header) == 1 and b & 0xF0 == 0:
                    self.broken = True
                    break
                if len(self._header) >= 2 and not b & 0x80:
                    complete = True
                    break
                if len(self._header) >= 5:
                    self.broken = True
                    break
            if self.broken:
                out.append(Piece(data[i:j], start, False, framed=False))
                self._header.clear()
                i = j
                continue
            length = 0
            if complete:
                for k, b in enumerate(self._header[1:]):
                    length |= (b & 0x7F) << (7 * k)
                self._header.clear()
                self._need = length
                self._in_body = length > 0
            out.append(Piece(data[i:j], start, complete and length == 0))
            i = j
        return out


# --------------------------------------------------------------------------
# Per-direction settings, rules and counters
# --------------------------------------------------------------------------


class DropRule:
    """Drops the next ``count`` packets matching ``match`` in one direction."""

    def __init__(self, direction: str, match: PacketMatch, count: int) -> None:
        self.direction = direction
        self.match = match
        self.count = count
        self.dropped: list[bytes] = []  # the packets dropped so far
        self._done = threading.Event()

    @property
    def remaining(self) -> int:
        return self.count - len(self.dropped)

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def _describe(self) -> str:
        name = getattr(self.match, "__name__", repr(self.match))
        return f"{self.count} {self.direction} packet(s) matching {name}"

    def wait(self, timeout: float) -> list[bytes]:
        """Block until all ``count`` packets were dropped; WaitTimeout otherwise."""
        if not self._done.wait(timeout):
            raise WaitTimeout(
                f"timed out after {timeout:g} s waiting for the proxy to drop {self._describe()} "
                f"({len(self.dropped)} dropped so far)"
            )
        return list(self.dropped)

    def __repr__(self) -> str:
        return f"<DropRule {self._describe()}, {len(self.dropped)} dropped>"


@dataclass(frozen=True)
class DirectionStats:
    """Counters of one direction, summed over all connections."""

    bytes_received: int = 0
    bytes_forwarded: int = 0  # written to the receiving socket
    bytes_dropped: int = 0  # blackholed or inside dropped packets
    bytes_held: int = 0  # received, waiting for their delay or an unpause
    packets_forwarded: int = 0  # MQTT packets, counted at their last byte
    packets_dropped: int = 0


@dataclass(frozen=True)
class _Settings:
    delay_s: float
    jitter_s: float
    blackhole: bool
    paused: bool
    has_rules: bool


class Direction:
    """Settings and counters of one direction; every method is thread-safe."""

    def __init__(self, name: DirectionName, changed: Callable[[], None]) -> None:
        self.name: DirectionName = name
        self._changed = changed
        self._lock = threading.Lock()
        self._delay_s = 0.0
        self._jitter_s = 0.0
        self._blackhole = False
        self._paused = False
        self._rules: list[DropRule] = []
        self._stats = DirectionStats()

    # -- settings -------------------------------------------------------------
    @staticmethod
    def _seconds(what: str, value: float) -> float:
        v = float(value)
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"{what} must be a finite number of seconds >= 0, not {value!r}")
        return v

    @property
    def delay_s(self) -> float:
        with self._lock:
            return self._delay_s

    @delay_s.setter
    def delay_s(self, value: float) -> None:
        v = self._seconds("delay_s", value)
        with self._lock:
            self._delay_s = v

    @property
    def jitter_s(self) -> float:
        with self._lock:
            return self._jitter_s

    @jitter_s.setter
    def jitter_s(self, value: float) -> None:
        v = self._seconds("jitter_s", value)
        with self._lock:
            self._jitter_s = v

    @property
    def blackhole(self) -> bool:
        with self._lock:
            return self._blackhole

    @blackhole.setter
    def blackhole(self, on: bool) -> None:
        with self._lock:
            self._blackhole = bool(on)

    @property
    def paused(self) -> bool:
        with self._lock:
            return self._paused

    @paused.setter
    def paused(self, on: bool) -> None:
        with self._lock:
            self._paused = bool(on)
        self._changed()  # held bytes may go now

    def drop_next(self, match: PacketMatch, count: int = 1) -> DropRule:
        """Drop the next ``count`` whole MQTT packets for which ``match(packet)`` is true."""
        if count < 1:
            raise ValueError(f"count must be >= 1, not {count!r}")
        rule = DropRule(self.name, match, count)
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear(self) -> None:
        """No delay, no jitter, no blackhole, not paused, no drop rules."""
        with self._lock:
            self._delay_s = self._jitter_s = 0.0
            self._blackhole = self._paused = False
            self._rules.clear()
        self._changed()

    @property
    def rules(self) -> list[DropRule]:
        with self._lock:
            return list(self._rules)

    @property
    def stats(self) -> DirectionStats:
        with self._lock:
            return self._stats

    def __repr__(self) -> str:
        with self._lock:
            return (
                f"<Direction {self.name} delay={self._delay_s:g}s jitter={self._jitter_s:g}s "
                f"blackhole={self._blackhole} paused={self._paused} rules={len(self._rules)}>"
            )

    # -- used by the event-loop thread ------------------------------------------
    def _settings(self) -> _Settings:
        with self._lock:
            return _Settings(self._delay_s, self._jitter_s, self._blackhole, self._paused, bool(self._rules))

    def _take(self, packet: bytes) -> bool:
        """True if a rule claims (drops) this packet."""
        with self._lock:
            for rule in self._rules:
                try:
                    hit = bool(rule.match(packet))
                except Exception:
                    log.exception("drop rule %r raised; treating the packet as not matching", rule)
                    hit = False
                if hit:
                    rule.dropped.append(packet)
                    if rule.remaining <= 0:
                        self._rules.remove(rule)
                        rule._done.set()
                    return True
        return False

    def _count(self, **add: int) -> None:
        with self._lock:
            s = self._stats
            self._stats = dataclasses.replace(s, **{k: getattr(s, k) + v for k, v in add.items()})


@dataclass(frozen=True)
class ProxyStats:
    up: DirectionStats
    down: DirectionStats
    connections_accepted: int
    connections_refused: int  # accepted and closed at once (``refuse``)
    connections_failed: int  # upstream could not be reached
    connections_active: int
    connections_cut: int

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------
# One connection
# --------------------------------------------------------------------------


def _nodelay(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _close(sock: socket.socket, reset: bool) -> None:
    if reset:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
    with contextlib.suppress(OSError):
        sock.close()


@dataclass
class _Item:
    due: float  # loop.time() at which to deliver
    data: bytes | None  # None: end of stream (FIN)
    packets: int


class _Pipe:
    """One direction of one connection: read, fault, hold, write."""

    def __init__(self, direction: Direction, src: socket.socket, dst: socket.socket) -> None:
        self.direction = direction
        self.src = src
        self.dst = dst
        self.framer = MqttFramer()
        self.queue: collections.deque[_Item] = collections.deque()
        self.held = 0
        self.last_due = 0.0
        self.packet: bytearray | None = None  # a packet being collected for the drop rules
        self.wake = asyncio.Event()
        self.room = asyncio.Event()
        self.room.set()

    # -- receiving side ---------------------------------------------------------
    def _received(self, data: bytes, now: float) -> None:
        d = self.direction
        cfg = d._settings()
        out = bytearray()
        packets = dropped_packets = dropped_bytes = 0
        for piece in self.framer.split(data):
            if cfg.blackhole:
                self.packet = None
                dropped_bytes += len(piece.data)
                dropped_packets += piece.end
                continue
            if not piece.framed:
                if self.packet is not None:  # the stream turned out not to be MQTT
                    out += self.packet
                    self.packet = None
                out += piece.data
                continue
            if piece.start:
                self.packet = bytearray() if cfg.has_rules else None
            if self.packet is None:
                out += piece.data
            else:
                self.packet += piece.data
            if piece.end:
                if self.packet is not None:
                    packet, self.packet = bytes(self.packet), None
                    if d._take(packet):
                        dropped_bytes += len(packet)
                        dropped_packets += 1
                        continue
                    out += packet
                packets += 1
        d._count(bytes_received=len(data), bytes_dropped=dropped_bytes, packets_dropped=dropped_packets)
        if out:
            self._schedule(bytes(out), packets, now, cfg)

    def _schedule(self, data: bytes | None, packets: int, now: float, cfg: _Settings) -> None:
        due = now + cfg.delay_s + (random.uniform(0.0, cfg.jitter_s) if cfg.jitter_s else 0.0)
        due = max(due, self.last_due)  # never overtake an earlier chunk
        self.last_due = due
        self.queue.append(_Item(due, data, packets))
        if data:
            self.held += len(data)
            self.direction._count(bytes_held=len(data))
            if self.held >= HIGH_WATER:
                self.room.clear()
        self.wake.set()

    async def read(self, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            await self.room.wait()
            data = await loop.sock_recv(self.src, READ_SIZE)
            now = loop.time()
            if not data:
                cfg = self.direction._settings()
                if not cfg.blackhole:  # a partition swallows the FIN too
                    self._schedule(None, 0, now, cfg)
                return
            self._received(data, now)

    # -- sending side -----------------------------------------------------------
    async def write(self, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            if not self.queue or self.direction.paused:
                self.wake.clear()
                await self.wake.wait()
                continue
            due = self.queue[0].due
            if due > loop.time():
                self.wake.clear()
                timer = loop.call_at(due, self.wake.set)
                try:
                    await self.wake.wait()
                finally:
                    timer.cancel()
                continue
            if self.queue[0].data is None:
                self.queue.popleft()
                self.dst.shutdown(socket.SHUT_WR)
                return
            chunks: list[bytes] = []
            packets = 0
            now = loop.time()
            while self.queue and self.queue[0].data is not None and self.queue[0].due <= now:
                item = self.queue.popleft()
                assert item.data is not None
                chunks.append(item.data)
                packets += item.packets
            data = b"".join(chunks)
            await loop.sock_sendall(self.dst, data)
            self.held -= len(data)
            self.direction._count(bytes_forwarded=len(data), packets_forwarded=packets, bytes_held=-len(data))
            if self.held < LOW_WATER:
                self.room.set()

    def discard(self) -> None:
        """Forget held bytes (the connection is gone)."""
        if self.held:
            self.direction._count(bytes_held=-self.held)
        self.held = 0
        self.queue.clear()


class _Link:
    """A client connection and its upstream connection."""

    def __init__(self, client: socket.socket, peer: Any) -> None:
        self.client = client
        self.peer = peer
        self.upstream: socket.socket | None = None
        self.pipes: list[_Pipe] = []
        self.task: asyncio.Task[None] | None = None
        self.reset = True  # RST both sides when it ends (unless both FINs went through)


# --------------------------------------------------------------------------
# The proxy
# --------------------------------------------------------------------------


def _resolve(host: str, port: int, passive: bool = False) -> tuple[int, Any]:
    flags = socket.AI_PASSIVE if passive else 0
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=flags)
    if not infos:
        raise OSError(f"cannot resolve {host!r}")
    family, _, _, _, addr = infos[0]
    return family, addr


def _with_address(url: str, host: str, port: int) -> str:
    """``url`` (scheme://[userinfo@]host:port) with another host and port."""
    scheme, _, rest = url.partition("://")
    userinfo, at, _ = rest.rpartition("@")
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{userinfo}{at}{shown}:{port}"


class FaultProxy:
    """A TCP proxy on loopback that delays, pauses, blackholes, cuts and drops.

    ``start()`` binds the port (``.port``) and starts the proxy thread;
    ``stop()`` (or leaving a ``with`` block) resets every connection, closes
    the port and joins the thread.  Faults are set through ``proxy.up`` /
    ``proxy.down`` (see :class:`Direction`), :meth:`set`, :meth:`cut` and the
    ``drop_next_*`` methods, from any thread.
    """

    def __init__(
        self, upstream_host: str, upstream_port: int, listen_host: str = "127.0.0.1", listen_port: int = 0
    ) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.listen_host = listen_host
        self.listen_port = listen_port
        self.up = Direction("up", self._wake_all)
        self.down = Direction("down", self._wake_all)
        self._lock = threading.Lock()
        self._refuse = False
        self._accepted = self._refused = self._failed = self._cut = 0
        self._port: int | None = None
        self._listener: socket.socket | None = None
        self._upstream_addr: tuple[int, Any] | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._links: set[_Link] = set()
        self._ready = threading.Event()
        self._error: BaseException | None = None

    # -- lifecycle --------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the proxy is not started; call start() first")
        return self._port

    @property
    def address(self) -> tuple[str, int]:
        return (self.listen_host, self.port)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> Self:
        if self._thread is not None:
            raise RuntimeError("the proxy is already started")
        self._upstream_addr = _resolve(self.upstream_host, self.upstream_port)
        family, addr = _resolve(self.listen_host, self.listen_port, passive=True)
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(addr)
            listener.listen(64)
            listener.setblocking(False)
        except BaseException:
            listener.close()
            raise
        self._listener = listener
        self._port = int(listener.getsockname()[1])
        self._ready.clear()
        self._error = None
        self._thread = threading.Thread(target=self._run, name=f"fault-proxy:{self._port}", daemon=True)
        self._thread.start()
        if not self._ready.wait(CONTROL_TIMEOUT) or self._error is not None:
            error = self._error
            self.stop()
            raise RuntimeError(f"fault proxy on port {self._port} did not start: {error}") from error
        log.info("fault proxy %s:%d -> %s:%d", self.listen_host, self._port, self.upstream_host, self.upstream_port)
        return self

    def stop(self) -> None:
        """Reset every connection, close the port and join the thread.  Idempotent."""
        thread, loop, stopping = self._thread, self._loop, self._stopping
        if thread is None:
            return
        if thread is threading.current_thread():
            raise RuntimeError("stop() called from the proxy's own thread")
        if loop is not None and stopping is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(stopping.set)
        thread.join(CONTROL_TIMEOUT)
        if thread.is_alive():
            raise RuntimeError(f"timed out after {CONTROL_TIMEOUT:g} s waiting for thread {thread.name} to exit")
        self._thread = self._loop = self._stopping = None
        if self._listener is not None:  # the thread normally closes it
            self._listener.close()
            self._listener = None

    def __enter__(self) -> Self:
        return self if self._thread is not None else self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = f"{self.listen_host}:{self._port}" if self._port is not None else "unbound"
        state = "running" if self.running else "stopped"
        return f"<FaultProxy {state} {where} -> {self.upstream_host}:{self.upstream_port}>"

    def info_for(self, broker: BrokerInfo) -> BrokerInfo:
        """``broker``'s info (credentials, TLS flag) pointing at this proxy."""
        return dataclasses.replace(
            broker,
            kind=KIND_PROXY,
            host=self.listen_host,
            port=self.port,
            url=_with_address(broker.url, self.listen_host, self.port),
        )

    # -- faults -----------------------------------------------------------------
    def _directions(self, which: Which) -> tuple[Direction, ...]:
        if which == "up":
            return (self.up,)
        if which == "down":
            return (self.down,)
        if which == "both":
            return (self.up, self.down)
        raise ValueError(f"direction must be 'up', 'down' or 'both', not {which!r}")

    def set(
        self,
        which: Which = "both",
        *,
        delay_s: float | None = None,
        jitter_s: float | None = None,
        blackhole: bool | None = None,
        paused: bool | None = None,
    ) -> None:
        """Change the settings given (the others stay) of one or both directions."""
        for d in self._directions(which):
            if delay_s is not None:
                d.delay_s = delay_s
            if jitter_s is not None:
                d.jitter_s = jitter_s
            if blackhole is not None:
                d.blackhole = blackhole
            if paused is not None:
                d.paused = paused

    def clear_faults(self) -> None:
        """Back to a transparent proxy that accepts connections (counters stay)."""
        self.up.clear()
        self.down.clear()
        self.refuse = False

    def drop_next_down(self, match: PacketMatch, count: int = 1) -> DropRule:
        """Drop the next ``count`` broker -> client MQTT packets that ``match``."""
        return self.down.drop_next(match, count)

    def drop_next_up(self, match: PacketMatch, count: int = 1) -> DropRule:
        """Drop the next ``count`` client -> broker MQTT packets that ``match``."""
        return self.up.drop_next(match, count)

    @property
    def refuse(self) -> bool:
        """While true, new connections are accepted and reset at once."""
        with self._lock:
            return self._refuse

    @refuse.setter
    def refuse(self, on: bool) -> None:
        with self._lock:
            self._refuse = bool(on)

    def cut(self, refuse: bool | None = None) -> int:
        """Reset (RST) every current connection on both sides; returns how many.

        New connections are still accepted, unless ``refuse`` is true (it
        stays in force until ``refuse`` is set false again).
        """
        if refuse is not None:
            self.refuse = refuse
        return self._call(self._acut())

    def stats(self) -> ProxyStats:
        with self._lock:
            return ProxyStats(
                up=self.up.stats,
                down=self.down.stats,
                connections_accepted=self._accepted,
                connections_refused=self._refused,
                connections_failed=self._failed,
                connections_active=len(self._links),
                connections_cut=self._cut,
            )

    # -- event-loop thread ------------------------------------------------------
    def _call(self, coro: Coroutine[Any, Any, int]) -> int:
        loop = self._loop
        if loop is None or not self.running:
            coro.close()
            raise RuntimeError("the proxy is not running")
        if self._thread is threading.current_thread():
            coro.close()
            raise RuntimeError("cannot wait for the proxy from its own thread")
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return future.result(CONTROL_TIMEOUT)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise WaitTimeout(f"timed out after {CONTROL_TIMEOUT:g} s waiting for the proxy to act") from None

    def _wake_all(self) -> None:
        loop = self._loop
        if loop is None:
            return

        def wake() -> None:
            for link in self._links:
                for pipe in link.pipes:
                    pipe.wake.set()

        with contextlib.suppress(RuntimeError):  # loop closed meanwhile
            loop.call_soon_threadsafe(wake)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as e:  # reported by start(), or logged
            self._error = e
            self._ready.set()
            log.exception("fault proxy thread failed")

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        listener = self._listener
        assert listener is not None
        accept = asyncio.create_task(self._accept(listener))
        self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            accept.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await accept
            listener.close()
            self._listener = None
            await self._acut(count=False)

    async def _acut(self, count: bool = True) -> int:
        links = list(self._links)
        for link in links:
            link.reset = True
            if link.task is not None:
                link.task.cancel()
        tasks = [link.task for link in links if link.task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if count:
            with self._lock:
                self._cut += len(links)
        return len(links)

    async def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                client, peer = await loop.sock_accept(listener)
            except OSError as e:  # e.g. EMFILE: keep serving the others
                log.warning("fault proxy accept failed: %s", e)
                await asyncio.sleep(0.05)
                continue
            if self.refuse:
                with self._lock:
                    self._refused += 1
                _close(client, reset=True)
                continue
            with self._lock:
                self._accepted += 1
            client.setblocking(False)
            _nodelay(client)
            link = _Link(client, peer)
            self._links.add(link)
            link.task = asyncio.create_task(self._serve(link))

    async def _serve(self, link: _Link) -> None:
        loop = asyncio.get_running_loop()
        tasks: list[asyncio.Task[None]] = []
        try:
            assert self._upstream_addr is not None
            family, addr = self._upstream_addr
            upstream = socket.socket(family, socket.SOCK_STREAM)
            link.upstream = upstream
            upstream.setblocking(False)
            _nodelay(upstream)
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT):
                    await loop.sock_connect(upstream, addr)
            except (OSError, TimeoutError) as e:
                with self._lock:
                    self._failed += 1
                log.warning("fault proxy: cannot reach %s:%d: %s", self.upstream_host, self.upstream_port, e)
                return
            link.pipes = [_Pipe(self.up, link.client, upstream), _Pipe(self.down, upstream, link.client)]
            for pipe in link.pipes:
                tasks += [asyncio.create_task(pipe.read(loop)), asyncio.create_task(pipe.write(loop))]
            await asyncio.gather(*tasks)
            link.reset = False  # both FINs went through
        except OSError as e:
            log.debug("fault proxy connection from %s ended: %s", link.peer, e)
        except Exception:
            log.exception("fault proxy connection from %s failed", link.peer)
        finally:
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            for pipe in link.pipes:
                pipe.discard()
            _close(link.client, link.reset)
            if link.upstream is not None:
                _close(link.upstream, link.reset)
            self._links.discard(link)
