# The MQTT client on one connection (packets are built in mqtt_proto.py, the
# link opened by mqtt_open.py, kept up by mqtt_keep.py). Event-driven: one
# reader task parses packets as their bytes arrive and hands each PUBLISH to
# the link at once.
# QoS 1 out: the latest unacknowledged PUBLISH per topic is kept (a newer one
# on the same topic supersedes it: only the latest state matters) and sent
# again with the DUP flag after a reconnect (persistent session) and when its
# PUBACK is late.
import asyncio
import struct
import sys

# Loaded at boot, before the heap fragments, for mqtt_open.py:
from asyncio import wait_for  # noqa: F401
from asyncio.stream import Stream  # noqa: F401  # pyright: ignore[reportMissingImports]  # in MicroPython's asyncio; the stubs lack it
from micropython import const

import clock
import mqtt_keep
import mqtt_proto

# Socket options by number (MicroPython's socket module does not name them
# all): the same numbers in Linux and lwIP (mqtt_open.py sets TCP_NODELAY).
_IPPROTO_TCP = const(6)
_TCP_QUICKACK = const(12)  # Linux only: send a delayed ACK now

# Packets parsed here (mqtt_proto.py builds them)
_PUBLISH = const(0x30)
_PUBACK = const(0x40)
_SUBACK = const(0x90)
_PINGRESP = const(0xD0)
_DUP = const(0x08)  # PUBLISH flag: sent again

_MAX_PACKET = const(512)  # larger payloads are dropped unread (protocol.MAX_LEN)
_ACK_OWED_MAX = const(8)  # held-back PUBACKs at most (Mosquitto's window is 20)


class MQTTClient:
    def __init__(self, link, client_id, host, port=1883, user=None, password=None,
                 keepalive=30, ssl=None, clean=True, will=None, subs=()):
        # link (mqtt_link.MqttLink) is told: async on_message(topic, buf, off,
        # n, retained) (topic: the subscribed one or None; payload
        # buf[off:off + n]; n > len(buf): too long, unread), async on_connect() after each connect,
        # async on_tick() at each timer tick, on_status(status, detail).
        # ssl: None, or the TLS options for mqtt_tls.context() (per connect);
        # will: None, or (topic, message, retain, qos); subs: (topic (bytes),
        # qos) pairs, subscribed at every connect
        self.link = link
        self.client_id = client_id
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.keepalive = keepalive
        self.ssl = ssl
        self.clean = clean
        # Use TCP_QUICKACK (Linux; lwIP has no such option). False: do without.
        self.quickack = sys.platform == "linux"
        self.will = will
        self.subs = subs
        self.connected = False  # True while up; None once the keepalive declared it dead
        self._subs_due = 0  # SUBACKs still to come before "connected" is said
        self.t_packet = 0  # device ticks when the last packet's header arrived
        self._inflight = {}  # topic -> [pid, packet (bytearray), ticks sent]; one per topic
        self._owed = []  # packet ids of PUBACKs held back (see _on_publish)
        # True: a QoS 1 message's PUBACK goes out with the QoS 0 report it
        # caused, in one write (see put); False: it waits for the broker's
        # PUBACK of a QoS 1 report (see _on_publish).
        self.ack_with_report = False
        self._acking = 0  # packet id of the message being handled, its PUBACK not yet sent
        self._addr = None  # the broker's address, resolved once per failure cycle
        self._r = None  # the raw TCP socket (under the TLS layer, with TLS)
        self._w: Stream | None = None  # (annotations cost nothing at run time: not compiled)
        self._lock = asyncio.Lock()
        self._pid = 0
        self._reader_task = None
        self._hs = False  # in a TLS handshake
        self.buf = bytearray(_MAX_PACKET)  # each incoming packet is read into it
        self.mv = memoryview(self.buf)
        self._tk = None  # the last topic put() sent on, and (_tv) its encoding
        self._tv = b""

    # A packet is written whole and at once (StreamWriter.write is synchronous:
    # what the socket does not take waits in the stream's out_buf), unless
    # another writer holds the stream: a packet written in pieces (discovery)
    # or a drain under way, which must not see out_buf grow under it.
    def _write(self, pkt):
        # Write pkt now: None once written, else pkt, for flush() to send.
        w = self._w
        if w is None:
            raise OSError("not connected")
        if self._lock.locked():
            return pkt
        w.write(pkt)

    def idle(self):
        # Connected, and nothing waits in the stream to be sent.
        w = self._w
        return w is not None and not w.out_buf

    def flush(self, pkt=None):
        # Send a packet _write could not, and drain what the socket has not
        # taken yet: an awaitable that yields at least once, as a drain
        # does. With nothing to send, asyncio's sleep_ms(0), which is
        # allocated once: no coroutine per report.
        w = self._w
        if w is None:
            raise OSError("not connected")
        if pkt is None and not w.out_buf:
            return asyncio.sleep_ms(0)
        return self._drain(w, pkt)

    async def _drain(self, w, pkt):
        async with self._lock:
            if self._w is not w:
                raise OSError("not connected")
            if pkt is not None:
                w.write(pkt)
            await w.drain()

    async def _send(self, pkt):
        await self.flush(self._write(pkt))

    def _got(self, n):
        # Of n bytes (at most _MAX_PACKET), how many have arrived already (in
        # the socket or inside the TLS layer), read into the buffer now:
        # without a round trip through the scheduler's poll (on a TLS socket
        # that poll cannot see bytes mbedTLS holds decrypted), and without a
        # coroutine when they are all there (a command's body, as a rule).
        r = self._w
        if r is None:
            raise OSError("not connected")
        i = 0
        while i < n:
            k = r.s.readinto(self.mv[i:n])
            if k is None:
                break
            if not k:
                raise EOFError
            i += k
        return i

    async def _fill(self, n, i=0):
        # n bytes into the preallocated buffer (i of them read already): no
        # allocation per packet but a small memoryview. More than the buffer
        # holds are read and dropped (what a packet of no interest or a
        # payload too long gets).
        r = self._w
        if r is None:
            raise OSError("not connected")
        mv = self.mv
        while n:
            m = min(n, _MAX_PACKET)
            while i < m:
                k = r.s.readinto(mv[i:m])
                if k is None:
                    k = await r.readinto(mv[i:m])
                    if k is None:
                        continue
                if not k:
                    raise EOFError
                i += k
            n -= m
            i = 0

    async def _read_packet(self):
        # The type byte and the first length byte in one read (every packet
        # has both), then any further length bytes: a read less per packet.
        buf = self.buf
        i = self._got(2)
        if i < 2:
            await self._fill(2, i)
        t = clock.now()
        hdr = buf[0]
        b = buf[1]
        n = b & 0x7F
        shift = 7
        while b & 0x80:
            if shift > 21:
                raise OSError("bad remaining length")
            await self._fill(1)
            b = buf[0]
            n |= (b & 0x7F) << shift
            shift += 7
        self.t_packet = t
        return hdr, n

    async def _open(self):
        # The connect-time code (resolve, socket, TLS, CONNECT, SUBSCRIBE) is
        # loaded for the connect and dropped again: no RAM in between.
        self._hs = False
        self._owed = []
        import mqtt_open

        try:
            # MicroPython's coroutines are generators: open() hands its socket
            # to the scheduler with a bare yield, which pyright takes for an
            # async generator.
            await mqtt_open.open(self)  # pyright: ignore[reportGeneralTypeIssues]
        finally:
            del sys.modules["mqtt_open"]

    def put(self, topic, msg, retain=False, qos=0, answers=False):
        # Build a PUBLISH and write it now (synchronous): None once written,
        # else the packet, to be sent by flush(pkt). Raises OSError when down.
        # answers: the report of the message being handled, whose PUBACK (if
        # owed) follows it in the same write.
        if self._w is None:
            raise OSError("not connected")
        if isinstance(msg, str):
            msg = msg.encode()
        if topic is not self._tk:  # the topic as MQTT sends it, made once per topic in a row
            self._tv = mqtt_proto._str(topic)
            self._tk = topic
        if qos:
            pid = self._pid = self._pid % 65535 + 1
            pkt = mqtt_proto.publish(self._tv, msg, retain, pid)
            # Kept until its PUBACK; supersedes an older one on this topic.
            self._inflight[topic] = [pid, pkt, clock.now()]
        else:
            ack = self._acking if answers else 0
            pkt = mqtt_proto.publish(self._tv, msg, retain, 0, ack)
            if ack:
                self._acking = 0  # only once it is in a packet: a MemoryError leaves it owed
        return self._write(pkt)

    async def publish(self, topic, msg, retain=False, qos=0):
        # msg: str or bytes (discovery.py writes a long payload in pieces).
        await self.flush(self.put(topic, msg, retain, qos))

    async def _resend(self, age_ms):
        # Send unacknowledged PUBLISHes again (DUP set) once older than age_ms.
        now = clock.now()
        for e in list(self._inflight.values()):
            if age_ms == 0 or clock.diff(now, e[2]) >= age_ms * 1000:
                e[1][0] |= _DUP
                e[2] = now
                await self._send(e[1])

    async def _reader(self):
        buf = self.buf
        while True:
            hdr, n = await self._read_packet()
            kind = hdr & 0xF0
            if kind == _PUBLISH:
                await self._on_publish(hdr, n)
            elif kind == _PUBACK and n == 2:
                await self._fill(2)
                pid = buf[0] << 8 | buf[1]
                for topic, e in self._inflight.items():
                    if e[0] == pid:
                        del self._inflight[topic]
                        break
                # The broker's PUBACK for a QoS 1 report, a lone small segment:
                # a broker with Nagle on (Mosquitto's default) holds what it
                # sends next until our TCP ACK of it comes (a delayed ACK: 40
                # ms on Linux, lwIP's 250 ms timer). So the ACK goes now, with
                # held PUBACKs (all once no report is in flight, else the
                # oldest) or, with none owed, at once (see _ack).
                if self._owed:
                    await self._pay(0 if not self._inflight else 1)
                else:
                    await self._ack(False)
            elif kind == _PINGRESP and n == 0:
                # The answer to our keepalive ping: the same lone segment, in
                # front of the next command for up to 250 ms on lwIP.
                await self._ack(True)
            else:
                await self._fill(n)  # dropped
                if kind == _SUBACK and self._subs_due:
                    # The broker answers in order: with the last SUBACK every
                    # subscription is in place, and a command sent now arrives.
                    self._subs_due -= 1
                    if not self._subs_due:
                        self._up()

    async def _ack(self, always):
        # ACK what the broker sent last, now: by TCP_QUICKACK where there is
        # one, else (lwIP), if always, by sending something the broker
        # answers with nothing (see _pay).
        if self.quickack:
            try:
                # _r: the socket mqtt_open.open() set, before the reader started
                self._r.setsockopt(_IPPROTO_TCP, _TCP_QUICKACK, 1)  # pyright: ignore[reportAttributeAccessIssue]
                return
            except Exception:
                self.quickack = False  # not on this stack
        if always:
            await self._pay()

    def _up(self):
        self.link.on_status("connected", "%s:%d" % (self.host, self.port))

    async def _pay(self, n=0):
        # Send the n oldest held-back PUBACKs (all: 0), in order, in one
        # write. Packet id 0 stands for a QoS 0 message, which owes no PUBACK:
        # if that is all, an empty QoS 0 PUBLISH on <will topic>/ack (no one
        # subscribes to it, the broker answers it with nothing) carries the
        # TCP ACK instead.
        owed = self._owed
        if n and n < len(owed):
            self._owed = owed[n:]
            owed = owed[:n]
        else:
            self._owed = []
        n = len(owed) - owed.count(0)
        if not n:
            if self.will:
                # ("/" + "ack": strings the firmware has, no new qstr)
                await self._send(mqtt_proto.publish(mqtt_proto._str(self.will[0] + "/" + "ack"), b"", False, 0))
            return
        pkt = bytearray(4 * n)  # the PUBACKs back to back
        i = 0
        for pid in owed:
            if pid:
                struct.pack_into("!BBH", pkt, i, _PUBACK, 2, pid)
                i += 4
        await self._send(pkt)

    def _match(self, i, tl):
        # The subscription whose topic is buf[i:i + tl], or None.
        buf = self.buf
        for t, _ in self.subs:
            if len(t) == tl and buf.find(t, i, i + tl) == i:
                return t
        return None

    async def _on_publish(self, hdr, n):
        # A PUBLISH that fits self.buf is read whole in one read (not one per
        # field: each read is a system call, and a cold one costs on a
        # spaced schedule): the topic is matched against the subscriptions in
        # place and the payload handed over where it lies. A larger one is
        # read field by field and its payload dropped. Nothing is allocated
        # per message.
        buf = self.buf
        qos = (hdr >> 1) & 3
        topic = None
        pid = 0
        if n <= _MAX_PACKET:
            i = self._got(n)
            if i < n:
                await self._fill(n, i)
            if n < 2:
                raise OSError("bad PUBLISH")
            tl = buf[0] << 8 | buf[1]
            off = tl + (4 if qos else 2)
            if off > n:
                raise OSError("bad PUBLISH")
            topic = self._match(2, tl)
            if qos:
                pid = buf[off - 2] << 8 | buf[off - 1]
            n -= off
        else:
            off = 0
            await self._fill(2)
            tl = buf[0] << 8 | buf[1]
            if tl + 2 > n:
                raise OSError("bad PUBLISH")
            n -= tl + 2
            await self._fill(tl)
            if tl <= _MAX_PACKET:  # else no topic of ours: dropped
                topic = self._match(0, tl)
            if qos:
                await self._fill(2)
                pid = buf[0] << 8 | buf[1]
                n -= 2
            await self._fill(n)  # too large: dropped, the handler reports it
        self._acking = pid if qos == 1 and self.ack_with_report else 0
        await self.link.on_message(topic, buf, off, n, bool(hdr & 1))
        if qos == 1:
            # Acknowledged once handled: a command lost with a dropped link
            # comes again, and the handler knows it by its id. QoS 0 reports:
            # the report took the PUBACK along (put), else (an error, a ping)
            # it goes now. QoS 1 reports: while one is in flight the PUBACK
            # waits for the broker's PUBACK of it, then carries our TCP ACK
            # of that (see _reader); at most _ACK_OWED_MAX wait, the timer's
            # next tick sends them. Nothing is allocated per command.
            if self.ack_with_report and not self._acking:
                return
            self._acking = 0
            owed = self._owed
            owed.append(pid)
            if not self._inflight or len(owed) >= _ACK_OWED_MAX:
                await self._pay()
        elif self._inflight and not self.quickack and len(self._owed) < _ACK_OWED_MAX:
            # Without TCP_QUICKACK (lwIP) the broker's PUBACK for the report
            # this message caused is ACKed by an empty PUBLISH (see _pay).
            self._owed.append(0)

    def close(self):
        # Close the link now: the socket itself, not only the stream
        # (MicroPython's Stream.close() leaves the socket to the garbage
        # collector, and lwIP has only a few sockets).
        w = self._w
        s = self._r
        self._w = None
        self._r = None
        self.connected = False
        for x in (w and w.s, s):  # the TLS socket, then the TCP one under it
            if x is not None:
                try:
                    x.close()
                except Exception:
                    pass

    async def run(self):
        # Stay connected forever (mqtt_keep.py).
        await mqtt_keep.run(self)
