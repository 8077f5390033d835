"""One proxied connection: two pipes moving bytes between sockets under a direction's fault settings."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import random
import socket
import struct
from dataclasses import dataclass
from typing import Any

from host_harness.netfault.framing import MqttFramer
from host_harness.netfault.settings import Direction, Settings

READ_SIZE = 65536
HIGH_WATER = 4 * 1024 * 1024
LOW_WATER = 1024 * 1024
_LINGER_RST = struct.pack("ii", 1, 0)

# --------------------------------------------------------------------------
# One connection
# --------------------------------------------------------------------------


def set_nodelay(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def close_socket(sock: socket.socket, reset: bool) -> None:
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


class Pipe:
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

    def _schedule(self, data: bytes | None, packets: int, now: float, cfg: Settings) -> None:
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


class Link:
    """A client connection and its upstream connection."""

    def __init__(self, client: socket.socket, peer: Any) -> None:
        self.client = client
        self.peer = peer
        self.upstream: socket.socket | None = None
        self.pipes: list[Pipe] = []
        self.task: asyncio.Task[None] | None = None
        self.reset = True  # RST both sides when it ends (unless both FINs went through)
