# The light: state, brightness, the output it drives, and the event record of
# every change (sequence number, command id, source, device timestamps).
#
# It also remembers the events of the last _SEEN commands that came with an
# id, packed in a ring allocated once (no growth, no fragments), so that a
# repeated id can be answered with its original event instead of applying the
# command again: a host may safely send any command (a toggle too) again. An
# id is kept as the first 8 bytes of its SHA-256 (two ids alike there: 2**-64).
import hashlib
import struct

from micropython import const

import clock

ON = "ON"
OFF = "OFF"
EVENT = '"seq":%d,"id":"%s","src":"%s","state":"%s","brightness":%d,"t_rx":%d,"t_pin":%d'
SRCS = ("serial", "mqtt")  # sources whose commands carry the sender's id
_SEEN = const(16)
_SLOT = const(30)  # 8 bytes of id hash, "<IBBqq": seq, on | src << 1, brightness, t_rx, t_pin


def _key(cmd_id):
    return hashlib.sha256(cmd_id).digest()[:8]


class Light:
    def __init__(self, output, sense=None):
        self.output = output
        self.sense = sense  # a Sense watching the output, or None
        self.on = False
        self.brightness = 255
        self.seq = 0
        self.last = None  # body of the last event (without t_tx)
        self.t_pin = 0
        self.seen = bytearray(_SEEN * _SLOT)
        self.seen_i = 0
        self.key_id = None  # the id of the last recall() and its key: apply() needs the same key
        self.key = b""
        output.write(False, self.brightness)

    def recall(self, cmd_id):
        """The event body of an earlier command with this id, or None."""
        key = _key(cmd_id)
        self.key_id = cmd_id
        self.key = key
        r = self.seen
        # The whole ring searched by one find (in C), not slot by slot: a
        # match counts only where a slot starts.
        off = r.find(key)
        while off >= 0:
            if off % _SLOT == 0:
                seq, f, b, t_rx, t_pin = struct.unpack_from("<IBBqq", r, off + 8)
                if seq:  # not a slot never written
                    return EVENT % (seq, cmd_id, SRCS[f >> 1], ON if f & 1 else OFF, b, t_rx, t_pin)
            off = r.find(key, off + 1)
        return None

    def apply(self, cmd_id, src, state, brightness, t_rx, keep=False):
        """Apply a validated command. Returns the event body (a JSON fragment
        without braces and without t_tx, which each transport adds). keep:
        remember it under cmd_id for recall() (src must be in SRCS)."""
        on = self.on if state is None else state
        if brightness is not None:
            if brightness == 0:
                on = False  # dark; the last non-zero brightness is kept for ON
            else:
                self.brightness = brightness
                if state is None:
                    on = True  # Home Assistant: a brightness alone turns it on
        s = self.sense
        if s:
            s.arm()
        self.output.write(on, self.brightness)
        t_pin = clock.now()
        self.t_pin = t_pin
        self.on = on
        self.seq += 1
        self.last = EVENT % (self.seq, cmd_id, src, ON if on else OFF, self.brightness, t_rx, t_pin)
        if keep:
            off = self.seen_i * _SLOT
            self.seen_i = (self.seen_i + 1) % _SEEN
            f = (1 if on else 0) | SRCS.index(src) << 1
            memoryview(self.seen)[off : off + 8] = self.key if self.key_id is cmd_id else _key(cmd_id)
            struct.pack_into("<IBBqq", self.seen, off + 8, self.seq, f, self.brightness, t_rx, t_pin)
        return self.last

    def sensed(self, body, t):
        """The event body with what the sense input saw (its ticks, or
        missed); it becomes the last event."""
        self.last = body + (',"t_sense":%d' % t if t else ',"sense":"missed"')
        return self.last

    def toggle(self, cmd_id, t_rx):
        return self.apply(cmd_id, "button", not self.on, None, t_rx)

    def state_body(self):
        return '"seq":%d,"state":"%s","brightness":%d' % (
            self.seq,
            ON if self.on else OFF,
            self.brightness,
        )
