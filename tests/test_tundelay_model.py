"""The TUN delay forwarder's model (host_harness/netfault/tundelay.py), without a TUN device.

The release times it gives packets: a round trip drawn once and split half
each way; a packet queued behind a held one of its flow leaving in the same
burst, not paying a second draw."""

from __future__ import annotations

import socket
import struct

from host_harness.netfault.tundelay import Scheduler

CONFIG = {"rtt": [[0.0, 10.0], [0.5, 20.0], [1.0, 40.0]], "device_net": "10.9.0.0/24", "seed": 3}


def tcp(src: str, sport: int, dst: str, dport: int) -> bytes:
    """An IPv4 header and the TCP ports: all the scheduler reads."""
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 0, 0, 64, 6, 0, socket.inet_aton(src), socket.inet_aton(dst))
    return ip + struct.pack("!HH", sport, dport) + bytes(16)


UP = tcp("10.9.0.2", 40000, "10.8.0.1", 1883)  # device -> broker
DOWN = tcp("10.8.0.1", 1883, "10.9.0.2", 40000)


def test_an_exchange_sees_one_round_trip_split_half_each_way() -> None:
    s = Scheduler(CONFIG, 0.0)
    t_up = s.release(UP, 100.0)
    t_down = s.release(DOWN, t_up)  # the answer, sent as soon as the request arrived
    half = t_up - 100.0
    assert 0.005 <= half <= 0.020  # half of a 10..40 ms round trip
    assert t_down - t_up == half


def test_a_packet_queued_behind_a_held_one_leaves_in_the_same_burst() -> None:
    s = Scheduler(CONFIG, 0.0)
    first = s.release(DOWN, 100.0)  # an ACK, say
    second = s.release(DOWN, 100.0001)  # the next message, 0.1 ms later, while the ACK is held
    assert second == first
    later = s.release(DOWN, first + 0.5)  # after the burst left: a delay of its own
    assert later > first + 0.5


def test_the_burst_rule_does_not_touch_other_flows() -> None:
    s = Scheduler(CONFIG, 0.0)
    a = s.release(DOWN, 100.0)
    other = tcp("10.8.0.1", 1883, "10.9.0.3", 40001)
    b = s.release(other, 100.0001)
    assert b != a  # its own draw
