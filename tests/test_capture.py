"""The loopback capture that splits a journey at the wire (benchmarks/peers.py)."""

from __future__ import annotations

import os
import shutil
import socket
import struct
import time

import pytest

from host_harness.measure import capture
from host_harness.measure.capture import Capture, CaptureError, Passage, WirePacket, passages, read_pcap

REASON = (
    "tcpdump is not installed (apt-get install tcpdump)"
    if not (shutil.which("tcpdump") or any(os.path.isfile(p) for p in capture.PLACES))
    else "capturing on lo needs root"
    if os.geteuid() != 0
    else ""
)


@pytest.mark.skipif(bool(REASON), reason=REASON or "available")
def test_each_packet_is_stamped_on_the_monotonic_clock_between_its_send_and_its_answer() -> None:
    """A TCP exchange on loopback, each message bracketed by the sender's monotonic clock: its
    packet's stamp (the kernel's, on CLOCK_REALTIME, moved to CLOCK_MONOTONIC) lies between the
    send and the answer, in each direction, and the ports say which way it went."""
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    cli = socket.create_connection(("127.0.0.1", port), timeout=5)
    peer, _ = srv.accept()
    peer.settimeout(5)
    for s in (cli, peer):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    brackets = []
    cap = Capture(port)
    try:
        with cap:
            for i in range(20):
                t0 = time.monotonic_ns()
                cli.sendall(b'{"id":"q-%d"}' % i)
                assert peer.recv(64) == b'{"id":"q-%d"}' % i
                peer.sendall(b'{"id":"a-%d"}' % i)
                assert cli.recv(64) == b'{"id":"a-%d"}' % i
                brackets.append((t0, time.monotonic_ns()))
                time.sleep(0.01)
        got = cap.packets()
    finally:
        cap.close()
        for s in (cli, peer, srv):
            s.close()
    for i, (t0, t1) in enumerate(brackets):
        (q,) = [p for p in got if p.data == b'{"id":"q-%d"}' % i]
        (a,) = [p for p in got if p.data == b'{"id":"a-%d"}' % i]
        assert q.dst == port and a.src == port
        assert t0 <= q.t_ns <= a.t_ns <= t1, (i, t0, q.t_ns, a.t_ns, t1)


def test_a_capture_without_tcpdump_says_so_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(capture.shutil, "which", lambda _name: None)
    monkeypatch.setattr(capture, "PLACES", ())
    with pytest.raises(CaptureError, match=r"^tcpdump is not installed \(apt-get install tcpdump\)$"):
        Capture(1883).start()


def _pcap(records: list[tuple[int, bytes]], nano: bool = True) -> bytes:
    head = struct.pack("<IHHiIII", 0xA1B23C4D if nano else 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    out = [head]
    for t_ns, frame in records:
        frac = t_ns % 1_000_000_000 if nano else t_ns % 1_000_000_000 // 1000
        out.append(struct.pack("<IIII", t_ns // 1_000_000_000, frac, len(frame), len(frame)) + frame)
    return b"".join(out)


def _frame(src: int, dst: int, payload: bytes) -> bytes:
    tcp = struct.pack(">HHIIBBHHH", src, dst, 0, 0, 5 << 4, 0x18, 65535, 0, 0) + payload
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0, 64, 6, 0, bytes(4), bytes(4))
    return bytes(14) + ip + tcp


def test_pcap_records_become_tcp_payloads_on_the_clock_asked_for() -> None:
    data = _pcap([(5_000_000_123, _frame(40000, 1883, b"cmd")), (5_000_400_456, _frame(1883, 40001, b""))])
    assert read_pcap(data, offset_ns=1_000_000_000) == [WirePacket(4_000_000_123, 40000, 1883, b"cmd")]
    micro = _pcap([(7_000_001_000, _frame(1883, 40000, b"rep"))], nano=False)
    assert read_pcap(micro) == [WirePacket(7_000_001_000, 1883, 40000, b"rep")]


def test_a_record_cut_short_is_left_out_and_a_file_of_another_kind_is_refused() -> None:
    data = _pcap([(1, _frame(1, 2, b"whole")), (2, _frame(1, 2, b"cut"))])
    assert [p.data for p in read_pcap(data[:-2])] == [b"whole"]
    with pytest.raises(CaptureError, match="not a little-endian pcap file"):
        read_pcap(b"\x0a\x0d\x0d\x0a" + bytes(40))  # pcapng
    with pytest.raises(CaptureError, match="not a pcap file: 3 bytes"):
        read_pcap(b"abc")


def test_passages_pair_each_copy_out_of_the_broker_with_the_last_one_into_it() -> None:
    b = 1883
    pk = [
        WirePacket(10, 50000, b, b'{"id":"x-1"}'),  # the command into the broker
        WirePacket(20, b, 50001, b'{"id":"x-1"}'),  # out to the device
        WirePacket(25, b, 50002, b'{"id":"x-1"}'),  # and to a second subscriber
        WirePacket(26, 50000, b, b'{"id":"x-10"}'),  # another command, whose id holds this one's
        WirePacket(30, 50001, b, b'{"id":"x-1","seq":3}'),  # the report into the broker
        WirePacket(40, b, 50000, b'{"id":"x-1","seq":3}'),  # out to the client
        WirePacket(50, 50001, b, b'{"id":"x-1","dup":true}'),  # a report the broker never sent on
    ]
    assert passages(pk, b, b'"x-1"') == [Passage(10, 20), Passage(10, 25), Passage(30, 40), Passage(50, None)]
