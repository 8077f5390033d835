"""What the delay forwarder did to each packet that carried data, and which journey it belonged to.

The forwarder (``tundelay``), asked to, appends one record per packet with a
payload (a TCP segment with data, a UDP datagram, an ICMP echo): when it
arrived, when it was let go, its direction, whether it waited behind an
earlier packet of its flow instead of drawing a delay of its own, and the
first bytes of its payload. Pure TCP ACKs are not recorded.

The record lets a benchmark split a journey measured across a link into the
link's part and the rest: the command's packet towards the device and the
report's packet back are found by the command id they carry, and the delay
each was given is subtracted from the journey. That difference is exact per
journey, where a floor measured on its own draws different delays and its
median moves by a millisecond between runs of a hundred.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import NamedTuple

HEAD = struct.Struct("<qqBH")  # arrived ns, released ns, flags, payload bytes kept
DOWN = 1  # towards the device
QUEUED = 2  # left behind an earlier packet of its flow, with no delay of its own
_QUOTE = re.compile(b'"')
KEEP = 1500  # payload bytes kept per packet: a whole Ethernet frame's worth (coalesced commands included)


@dataclass(frozen=True)
class Packet:
    arrived_ns: int  # CLOCK_MONOTONIC, which every namespace shares
    released_ns: int
    down: bool
    queued: bool
    payload: bytes

    @property
    def delay_ms(self) -> float:
        return (self.released_ns - self.arrived_ns) / 1e6


def payload(pkt: bytes) -> bytes:
    """The L4 payload of an IPv4 packet (TCP, UDP or ICMP), b"" for none."""
    if len(pkt) < 20 or pkt[0] >> 4 != 4:
        return b""
    ihl = (pkt[0] & 0x0F) * 4
    proto = pkt[9]
    if proto == 6 and len(pkt) >= ihl + 20:
        return pkt[ihl + (pkt[ihl + 12] >> 4) * 4 :]
    if proto in (1, 17):  # ICMP, UDP: an 8-byte header
        return pkt[ihl + 8 :]
    return b""


def pack(arrived_ns: int, released_ns: int, down: bool, queued: bool, data: bytes) -> bytes:
    data = data[:KEEP]
    return HEAD.pack(arrived_ns, released_ns, (DOWN if down else 0) | (QUEUED if queued else 0), len(data)) + data


class Reader:
    """Reads the records appended to a log file since the last read."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self._rest = b""

    def skip(self) -> None:
        """Forget everything logged so far: the next read() starts here."""
        self.read()

    def read(self) -> list[Packet]:
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = self._rest + f.read()
            self.offset = f.tell()
        out: list[Packet] = []
        i = 0
        while i + HEAD.size <= len(data):
            a, r, flags, n = HEAD.unpack_from(data, i)
            if i + HEAD.size + n > len(data):
                break  # a record still being written
            body = data[i + HEAD.size : i + HEAD.size + n]
            out.append(Packet(a, r, bool(flags & DOWN), bool(flags & QUEUED), body))
            i += HEAD.size + n
        self._rest = data[i:]
        return out


@dataclass(frozen=True)
class Crossing:
    """A message's two crossings of the link: out and back."""

    out: Packet
    back: Packet

    @property
    def link_ms(self) -> float:
        return self.out.delay_ms + self.back.delay_ms

    @property
    def queued(self) -> bool:
        return self.out.queued or self.back.queued


def crossing(packets: list[Packet], needle: bytes, out_down: bool) -> Crossing | None:
    """The first packet carrying ``needle`` in direction ``out_down`` (True: towards
    the device), and the first packet carrying it back after that one left; None
    when either is missing (lost, or cut off past the bytes kept)."""
    out = next((p for p in packets if p.down == out_down and needle in p.payload), None)
    if out is None:
        return None
    back = next(
        (p for p in packets if p.down != out_down and p.arrived_ns >= out.released_ns and needle in p.payload), None
    )
    return Crossing(out, back) if back is not None else None


def quoted(text: str) -> bytes:
    """``text`` as a JSON string in a payload: the needle a command id is found by."""
    return f'"{text}"'.encode()


class Together(NamedTuple):
    """How messages first crossed towards the device (``together``)."""

    seen: int  # messages found
    segments: int  # TCP segments they took
    most: int  # most in one segment

    @property
    def shared(self) -> int:
        """Messages that went in a segment with another one."""
        return self.seen - self.segments


def together(packets: list[Packet], needles: list[bytes]) -> Together:
    """How the messages carrying ``needles`` (``quoted`` strings) first crossed towards the
    device. A segment sent again is not counted again. Each packet is read once, whatever the
    number of needles: every stretch between two of its quote marks is looked up among them."""
    left = set(needles)
    total = len(left)
    segments = most = 0
    for p in packets:
        if not p.down or not left:
            continue
        q = [m.start() for m in _QUOTE.finditer(p.payload)]
        k = {p.payload[a : b + 1] for a, b in pairwise(q)} & left
        if k:
            segments += 1
            most = max(most, len(k))
            left -= k
    return Together(total - len(left), segments, most)
