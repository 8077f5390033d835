"""The delay forwarder's packet log: records read back as written, and a message's two crossings found."""

from __future__ import annotations

import pathlib
import struct

from host_harness.netfault import packetlog
from host_harness.netfault.packetlog import Packet, crossing


def _ipv4_tcp(data: bytes, doff_words: int = 8) -> bytes:
    ip = bytearray(20)
    ip[0] = 0x45
    ip[9] = 6
    tcp = bytearray(doff_words * 4)
    tcp[12] = doff_words << 4
    return bytes(ip) + bytes(tcp) + data


def test_payload_skips_ip_and_tcp_headers_with_options() -> None:
    assert packetlog.payload(_ipv4_tcp(b"hello", doff_words=8)) == b"hello"
    assert packetlog.payload(_ipv4_tcp(b"", doff_words=5)) == b""
    udp = bytes([0x45] + [0] * 8 + [17] + [0] * 10) + struct.pack("!HHHH", 1, 2, 11, 0) + b"abc"
    assert packetlog.payload(udp) == b"abc"
    assert packetlog.payload(b"\x60" + bytes(39)) == b""  # IPv6: not recorded


def test_records_are_read_once_each_and_a_half_written_one_waits(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "log"
    a = packetlog.pack(1_000, 6_000, True, False, b"cmd")
    b = packetlog.pack(7_000, 9_000, False, True, b"x" * (packetlog.KEEP + 100))
    path.write_bytes(a + b[:10])
    r = packetlog.Reader(path)
    assert r.read() == [Packet(1_000, 6_000, True, False, b"cmd")]
    with open(path, "ab") as f:
        f.write(b[10:])
    (got,) = r.read()
    assert (got.down, got.queued, got.payload) == (False, True, b"x" * packetlog.KEEP)
    assert got.delay_ms == 0.002
    assert r.read() == []


def test_a_crossing_is_the_first_packet_out_and_the_first_back_after_it_left() -> None:
    pk = [
        Packet(0, 5_000_000, True, False, b'{"id": "a-1"}'),
        Packet(1_000_000, 2_000_000, False, False, b'"id":"a-1" early'),  # before the command left: not its report
        Packet(6_000_000, 9_000_000, False, False, b'{"id":"a-1"} report'),
        Packet(7_000_000, 8_000_000, True, False, b'{"id": "a-12"}'),
    ]
    c = crossing(pk, b'"a-1"', True)
    assert c is not None
    assert (c.out, c.back) == (pk[0], pk[2])
    assert c.link_ms == 8.0
    assert not c.queued
    assert crossing(pk, b'"a-12"', True) is None  # never came back
    assert crossing(pk, b'"a-2"', True) is None


def test_together_counts_the_segments_commands_first_crossed_in() -> None:
    pk = [
        Packet(0, 1, True, False, b'..{"id":"c-1"}..'),
        Packet(2, 3, False, False, b'{"id":"c-1"} report, {"id":"c-2"} as well'),  # towards the host: not counted
        Packet(4, 5, True, False, b'{"id":"c-2"}{"id":"c-3"}{"id":"c-4"}'),  # three written apart, sent as one
        Packet(6, 7, True, False, b'{"id":"c-2"}{"id":"c-3"}'),  # sent again: not counted again
        Packet(8, 9, True, False, b'0"\x00\x0elight/one/set{"id": "c-5"}'),  # a length byte that is a quote mark
    ]
    ids = [b'"c-%d"' % i for i in range(1, 7)]  # c-6 never crossed
    assert packetlog.together(pk, ids) == (5, 3, 3)
    assert packetlog.together(pk, [b'"c-1"', b'"c-5"']) == (2, 2, 1)
    assert packetlog.together(pk, []) == (0, 0, 0)
