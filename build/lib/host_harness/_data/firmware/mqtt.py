# A small MQTT 3.1.1 client on asyncio streams, written for this firmware.
#
# Event-driven: one reader task parses packets as their bytes arrive and hands
# each PUBLISH to on_message at once. A keepalive task sends PINGREQ and
# declares the connection dead when the broker stops answering. run() keeps
# the connection up forever, reconnecting with exponential backoff and jitter.
#
# QoS 1 out: the latest unacknowledged PUBLISH per topic is kept (a newer one
# on the same topic supersedes it: only the latest state matters) and sent
# again with the DUP flag after a reconnect (persistent session) and when its
# PUBACK is late.
import asyncio
import gc
import os
import struct
from asyncio import open_connection, wait_for  # resolved at boot, not at the first connect

from micropython import const

import clock

# Packet types (const: no RAM for names)
_CONNECT = const(0x10)
_CONNACK = const(0x20)
_PUBLISH = const(0x30)
_PUBACK = const(0x40)
_SUBSCRIBE = const(0x82)
_PINGREQ = const(0xC0)
_DUP = const(0x08)

_MAX_PACKET = const(512)  # larger payloads are dropped unread (protocol.MAX_LEN)
_RETRY_MS = const(5000)  # an unacknowledged QoS 1 PUBLISH is sent again after this


def _str(s):
    if isinstance(s, str):
        s = s.encode()
    return struct.pack("!H", len(s)) + s


def _remaining(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return out


class MQTTClient:
    def __init__(self, client_id, host, port=1883, user=None, password=None,
                 keepalive=30, ssl=None, clean=True):
        # ssl: None, or the TLS options for mqtt_tls.context() (per connect)
        self.client_id = client_id
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.keepalive = keepalive
        self.ssl = ssl
        self.clean = clean
        self.will = None  # (topic, message, retain, qos)
        self.subs = []  # (topic, qos)
        # async (topic, buf, n, retained): topic is the subscribed one (None if
        # none matches), the payload is buf[:n]; n > len(buf): too long, unread
        self.on_message = None
        self.on_tick = None  # async (), at every keepalive/retransmission tick
        self.on_connect = None  # async ()
        self.on_status = print  # (status: str, detail: str)
        self.connected = False
        self._inflight = {}  # topic -> [pid, packet (bytearray), ticks sent]; one per topic
        self._r = None
        self._w = None
        self._lock = asyncio.Lock()
        self._pid = 0
        self._last_rx = 0
        self.t_packet = 0  # device ticks when the last packet's header arrived
        self._stop = False
        self._dead = False
        self._reader_task = None
        self._hs = False  # in a TLS handshake
        self.buf = bytearray(_MAX_PACKET)  # each incoming packet is read into it

    # -- wire ------------------------------------------------------------
    # A packet is written whole and at once (StreamWriter.write is synchronous:
    # what the socket does not take waits in the stream's out_buf), unless
    # another writer holds the stream: a packet written in pieces (discovery)
    # or a drain under way, which must not see out_buf grow under it.
    def _write(self, pkt):
        """Write pkt now: None once written, else pkt, for flush() to send."""
        w = self._w
        if w is None:
            raise OSError("not connected")
        if self._lock.locked():
            return pkt
        w.write(pkt)

    async def flush(self, pkt=None):
        """Send a packet _write could not, and drain what the socket has not
        taken yet. Yields at least once, as a drain does."""
        w = self._w
        if w is None:
            raise OSError("not connected")
        if pkt is None and not w.out_buf:
            await asyncio.sleep_ms(0)
            return
        async with self._lock:
            if self._w is not w:
                raise OSError("not connected")
            if pkt is not None:
                w.write(pkt)
            await w.drain()

    async def _send(self, pkt):
        await self.flush(self._write(pkt))

    async def _fill(self, n):
        # n bytes (at most len(buf)) into the preallocated buffer: no allocation
        # per packet but a small memoryview. What has arrived already (in the
        # socket or inside the TLS layer) is read at once, without a round trip
        # through the scheduler's poll: on a TLS socket that poll cannot see
        # bytes mbedTLS holds decrypted.
        r = self._r
        mv = memoryview(self.buf)
        i = 0
        while i < n:
            k = r.s.readinto(mv[i:n])
            if k is None:
                k = await r.readinto(mv[i:n])
                if k is None:
                    continue
            if not k:
                raise EOFError
            i += k

    async def _read_packet(self):
        buf = self.buf
        await self._fill(1)
        hdr = buf[0]
        t = clock.now()
        n = 0
        shift = 0
        while True:
            await self._fill(1)
            b = buf[0]
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                break
            shift += 7
            if shift > 21:
                raise OSError("bad remaining length")
        self._last_rx = self.t_packet = t
        return hdr, n

    async def _discard(self, n):
        while n:
            k = min(n, _MAX_PACKET)
            await self._fill(k)
            n -= k

    def _next_pid(self):
        self._pid = self._pid % 65535 + 1
        return self._pid

    # -- connection ----------------------------------------------------------
    async def _open(self):
        self._hs = False
        if self.ssl:
            import mqtt_tls  # only a TLS device pays for it

            try:
                ctx = mqtt_tls.context(self.ssl)
            except Exception as e:
                raise OSError("tls: cannot load the certificates: %s" % e)
            self._hs = True  # the TLS handshake goes on until the CONNACK
            r, w = await open_connection(self.host, self.port, ssl=ctx, server_hostname=self.host)
        else:
            r, w = await open_connection(self.host, self.port)
        try:
            w.s.setsockopt(6, 1, 1)  # IPPROTO_TCP, TCP_NODELAY
        except Exception:
            pass
        self._r, self._w = r, w
        flags = 0x02 if self.clean else 0
        payload = bytearray(_str(self.client_id))
        if self.will:
            t, m, retain, qos = self.will
            flags |= 0x04 | (qos << 3) | (0x20 if retain else 0)
            payload += _str(t) + _str(m)
        if self.user is not None:
            flags |= 0x80
            payload += _str(self.user)
            if self.password is not None:
                flags |= 0x40
                payload += _str(self.password)
        var = _str("MQTT") + bytes((4, flags)) + struct.pack("!H", self.keepalive)
        body = var + payload
        await self._send(bytes((_CONNECT,)) + _remaining(len(body)) + body)
        hdr, n = await wait_for(self._read_packet(), 10)
        if hdr != _CONNACK or n != 2:
            raise OSError("expected CONNACK")
        await self._fill(2)
        self._hs = False
        if self.buf[1] != 0:
            raise OSError("connection refused, code %d" % self.buf[1])
        for topic, qos in self.subs:
            pid = self._next_pid()
            body = struct.pack("!H", pid) + _str(topic) + bytes((qos,))
            await self._send(bytes((_SUBSCRIBE,)) + _remaining(len(body)) + body)

    def put(self, topic, msg, retain=False, qos=0):
        """Build a PUBLISH and write it now (synchronous): None once written,
        else the packet, to be sent by flush(pkt). Raises OSError when down."""
        if self._w is None:
            raise OSError("not connected")
        if isinstance(msg, str):
            msg = msg.encode()
        t = _str(topic)
        n = len(t) + len(msg)
        hdr = _PUBLISH | (0x01 if retain else 0)
        if qos:
            pid = self._next_pid()
            rem = _remaining(n + 2)
            i = 1 + len(rem) + len(t)
            pkt = bytearray(i + 2 + len(msg))  # one allocation, kept for a resend
            pkt[0] = hdr | 0x02  # QoS 1 (QoS 2 is not used)
            pkt[1 : 1 + len(rem)] = rem
            pkt[1 + len(rem) : i] = t
            struct.pack_into("!H", pkt, i, pid)
            pkt[i + 2 :] = msg
            # Kept until its PUBACK; supersedes an older one on this topic.
            self._inflight[topic] = [pid, pkt, clock.now()]
        else:
            pkt = bytes((hdr,)) + _remaining(n) + t + msg
        return self._write(pkt)

    async def publish(self, topic, msg, retain=False, qos=0):
        await self.flush(self.put(topic, msg, retain, qos))

    async def _resend(self, age_ms):
        """Send unacknowledged PUBLISHes again (DUP set) once older than age_ms."""
        now = clock.now()
        for e in list(self._inflight.values()):
            if clock.diff(now, e[2]) >= age_ms * 1000:
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
            else:
                await self._discard(n)

    async def _on_publish(self, hdr, n):
        # Topic and payload are read into self.buf in turn: the topic is
        # matched against the subscriptions in place, then the payload
        # overwrites it. Nothing is allocated per message.
        buf = self.buf
        await self._fill(2)
        tl = buf[0] << 8 | buf[1]
        if tl + 2 > n:
            raise OSError("bad PUBLISH")
        n -= tl + 2
        topic = None
        if tl > _MAX_PACKET:
            await self._discard(tl)  # no topic of ours
        else:
            await self._fill(tl)
            for t, _ in self.subs:
                if len(t) == tl and buf.find(t, 0, tl) == 0:
                    topic = t
                    break
        qos = (hdr >> 1) & 3
        pid = 0
        if qos:
            await self._fill(2)
            pid = buf[0] << 8 | buf[1]
            n -= 2
        if n > _MAX_PACKET:
            await self._discard(n)  # too large: the handler reports it
        else:
            await self._fill(n)
        if qos == 1:
            await self._send(struct.pack("!BBH", _PUBACK, 2, pid))
        if self.on_message:
            await self.on_message(topic, buf, n, bool(hdr & 1))

    async def _pinger(self):
        # Keepalive and QoS 1 retransmission timer (timeouts, not input polling).
        ka = self.keepalive * 1000  # ms; 0: no keepalive
        step = min(ka // 2, _RETRY_MS) if ka else _RETRY_MS
        quiet = 0
        while True:
            await asyncio.sleep_ms(step)
            if ka and clock.diff(clock.now(), self._last_rx) > ka * 1500:
                # Half-open connection: nothing heard for 1.5 keepalives.
                self._dead = True
                if self._reader_task:
                    self._reader_task.cancel()
                return
            quiet += step
            try:
                if self._lock.locked():
                    continue  # a send is stuck: no pile-up; the check above ends it
                if ka and quiet >= ka // 2:
                    quiet = 0
                    await self._send(bytes((_PINGREQ, 0)))
                if self._inflight:
                    await self._resend(_RETRY_MS)
                if self.on_tick:
                    await self.on_tick()
            except Exception:
                return

    def _close(self):
        w = self._w
        self._w = None
        self._r = None
        self.connected = False
        if w:
            try:
                w.close()
            except Exception:
                pass

    async def run(self):
        """Stay connected forever: connect, serve, reconnect with backoff."""
        backoff = 250
        while not self._stop:
            gc.collect()  # a connection's buffers in one piece, not in fragments
            try:
                await self._open()
                self.connected = True
                self._last_rx = clock.now()
                backoff = 250
                if self._inflight:
                    await self._resend(0)  # unacknowledged before the link dropped
                if self.on_connect:
                    await self.on_connect()
                # Up, subscribed, and the state, availability... published.
                self.on_status("connected", "%s:%d" % (self.host, self.port))
                self._dead = False
                self._reader_task = asyncio.create_task(self._reader())
                t = asyncio.create_task(self._pinger())
                try:
                    await self._reader_task
                finally:
                    t.cancel()
                    self._reader_task = None
            except asyncio.CancelledError:
                if not self._dead:
                    raise
                self.on_status("disconnected", "keepalive timeout")
            except Exception as e:  # the link must never take the light down
                why = " ".join(str(e).split()) or type(e).__name__  # one line
                if why.isdigit():
                    why = "[Errno %s]" % why  # an OSError with its number only
                if self._hs and isinstance(e, ValueError):
                    # How mbedTLS reports a certificate that does not verify.
                    why = "tls: certificate verify failed: " + why
                elif self._hs and "ECONNREFUSED" not in why:
                    why = "tls: handshake failed: " + why
                self.on_status("disconnected", why)
            finally:
                self._close()
                self._lock = asyncio.Lock()  # not held over by a send stuck on the old link
            if self._stop:
                break
            jitter = os.urandom(1)[0] * backoff // 512  # up to +50 %
            await asyncio.sleep_ms(backoff + jitter)
            backoff = min(backoff * 2, 30000)
