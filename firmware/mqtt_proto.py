# MQTT 3.1.1 packets: encoding, the remaining-length framing, and the
# keepalive timer's arithmetic. No I/O: the connection is kept by mqtt.py.
# (_str and _remaining are used by mqtt.py and mqtt_open.py too: names that
# the firmware had already. On the Unix port every new name costs RAM for
# good once a module holding it is loaded, so few new names here.)
import struct

from micropython import const

# Packet types (first header byte, flags included where fixed). Private
# consts cost no RAM; mqtt.py has its own for the packets it parses.
_PUBLISH = const(0x30)
_PUBACK = const(0x40)
_RETAIN = const(0x01)  # PUBLISH flag
_QOS1 = const(0x02)  # PUBLISH flag: QoS 1
_MAX_VARINT = const(268435455)  # the largest remaining length (4 bytes)



def _str(s):
    # A UTF-8 string as MQTT sends it: 2-byte length, then the bytes.
    if isinstance(s, str):
        s = s.encode()
    return struct.pack("!H", len(s)) + s


def _remaining(n):
    # The remaining length n in MQTT's 1..4 byte encoding.
    if n < 0 or n > _MAX_VARINT:
        raise ValueError("remaining length out of range")
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return out


def publish(t, msg, retain, id, ack=0):
    # A PUBLISH of msg on topic t (as _str encodes it): QoS 1 with packet id
    # id, or QoS 0 when id is 0, then (QoS 0 only) the PUBACK of packet id
    # ack when ack is not 0: both go out in one write. One allocation, the
    # packet (a bytearray, kept for a resend at QoS 1).
    q = 2 if id else 0
    n = len(t) + q + len(msg)
    if n > _MAX_VARINT:
        raise ValueError("remaining length out of range")
    r = 1
    while n >> 7 * r:
        r += 1
    i = 1 + r + len(t)
    end = i + q + len(msg)
    pkt = bytearray(end + (4 if ack and not id else 0))
    pkt[0] = _PUBLISH | (_RETAIN if retain else 0) | (_QOS1 if id else 0)
    for k in range(1, r + 1):  # the remaining length, 7 bits a byte
        pkt[k] = n & 0x7F | (0x80 if k < r else 0)
        n >>= 7
    pkt[1 + r : i] = t
    if id:
        struct.pack_into("!H", pkt, i, id)
    pkt[i + q : end] = msg
    if ack and not id:
        struct.pack_into("!BBH", pkt, end, _PUBACK, 2, ack)
    return pkt


# The keepalive timer, in plain integer milliseconds: a PINGREQ every half
# keepalive, the link dead after 1.5 keepalives without a packet. Each tick
# adds the (short) time since the last one, so no ticks difference ever spans
# a keepalive and any keepalive works (MQTT allows up to 65535 s; ticks_diff
# over 1.5 x 600 s of ticks_us would leave its range).
_KA_PING = const(1)  # what keepalive() returns (mqtt.py has the same consts)
_KA_DEAD = const(2)


def keepalive(t, n, dt, e):
    # t: [ms without a packet, ms since the last PINGREQ], updated in place
    # for a keepalive of n ms, dt ms after the last tick, in which a packet
    # arrived (e true) or not. Returns 2 (dead), 1 (send a PINGREQ) or 0.
    t[0] = 0 if e else t[0] + dt
    if not n:
        return 0
    if t[0] > n * 3 // 2:
        return _KA_DEAD
    t[1] += dt
    if t[1] >= n // 2:
        t[1] = 0
        return _KA_PING
    return 0
