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
import os
import struct

import clock

CONNECT = 0x10
CONNACK = 0x20
PUBLISH = 0x30
PUBACK = 0x40
SUBSCRIBE = 0x82
SUBACK = 0x90
PINGREQ = 0xC0
PINGRESP = 0xD0
DISCONNECT = 0xE0
DUP = 0x08

MAX_PACKET = 1024  # larger incoming packets are read and dropped
RETRY_MS = 5000  # an unacknowledged QoS 1 PUBLISH is sent again after this


class MQTTError(Exception):
    pass


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


def _text(e):
    # One line, safe inside a JSON string.
    return " ".join(str(e).replace("\\", "/").replace('"', "'").split()) or type(e).__name__


class MQTTClient:
    def __init__(self, client_id, host, port=1883, user=None, password=None,
                 keepalive=30, ssl=None, clean=True):
        # ssl: None, or a function returning a fresh ssl.SSLContext per connect
        self.client_id = client_id
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.keepalive = keepalive
        self.ssl = ssl
        self.clean = clean
        self.will = None
        self.subs = []  # (topic, qos)
        self.on_message = None  # async (topic: bytes, payload: bytes|None, retained: bool)
        self.on_connect = None  # async ()
        self.on_status = None  # (status: str, detail: str)
        self.connected = False
        self.connects = 0
        self.session_present = False
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

    def set_last_will(self, topic, msg, retain=False, qos=0):
        self.will = (topic, msg, retain, qos)

    def subscribe(self, topic, qos=0):
        self.subs.append((topic, qos))

    def _status(self, s, detail=""):
        if self.on_status:
            self.on_status(s, detail)

    # -- wire ------------------------------------------------------------
    async def _send(self, pkt):
        w = self._w
        if w is None:
            raise MQTTError("not connected")
        async with self._lock:
            w.write(pkt)
            await w.drain()

    async def _read_packet(self):
        r = self._r
        hdr = (await r.readexactly(1))[0]
        t = clock.now()
        n = 0
        shift = 0
        while True:
            b = (await r.readexactly(1))[0]
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                break
            shift += 7
            if shift > 21:
                raise MQTTError("bad remaining length")
        self._last_rx = self.t_packet = t
        return hdr, n

    async def _discard(self, n):
        while n:
            k = min(n, 256)
            await self._r.readexactly(k)
            n -= k

    def _next_pid(self):
        self._pid = self._pid % 65535 + 1
        return self._pid

    # -- connection ----------------------------------------------------------
    async def _open(self):
        if self.ssl:
            ctx = self.ssl()
            r, w = await asyncio.open_connection(self.host, self.port, ssl=ctx, server_hostname=self.host)
        else:
            r, w = await asyncio.open_connection(self.host, self.port)
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
        await self._send(bytes((CONNECT,)) + _remaining(len(body)) + body)
        hdr, n = await asyncio.wait_for(self._read_packet(), 10)
        data = await self._r.readexactly(n)
        if hdr != CONNACK or n != 2:
            raise MQTTError("expected CONNACK")
        if data[1] != 0:
            raise MQTTError("connection refused, code %d" % data[1])
        self.session_present = bool(data[0] & 1)
        for topic, qos in self.subs:
            pid = self._next_pid()
            body = struct.pack("!H", pid) + _str(topic) + bytes((qos,))
            await self._send(bytes((SUBSCRIBE,)) + _remaining(len(body)) + body)

    async def publish(self, topic, msg, retain=False, qos=0):
        if isinstance(msg, str):
            msg = msg.encode()
        t = _str(topic)
        n = len(t) + len(msg)
        hdr = PUBLISH | (0x01 if retain else 0)
        if qos:
            hdr = hdr | 0x02  # QoS 1 (QoS 2 is not used)
            pid = self._next_pid()
            pkt = bytearray((hdr,))
            pkt += _remaining(n + 2)
            pkt += t
            pkt += struct.pack("!H", pid)
            pkt += msg
            # Kept until its PUBACK; supersedes an older one on this topic.
            self._inflight[topic] = [pid, pkt, clock.now()]
        else:
            pkt = bytes((hdr,)) + _remaining(n) + t + msg
        await self._send(pkt)

    def unacked(self):
        return len(self._inflight)

    async def _resend(self, age_ms):
        """Send unacknowledged PUBLISHes again (DUP set) once older than age_ms."""
        now = clock.now()
        for e in list(self._inflight.values()):
            if clock.diff(now, e[2]) >= age_ms * 1000:
                e[1][0] |= DUP
                e[2] = now
                await self._send(e[1])

    def _puback(self, pid):
        for topic, e in self._inflight.items():
            if e[0] == pid:
                del self._inflight[topic]
                return

    async def _reader(self):
        while True:
            hdr, n = await self._read_packet()
            kind = hdr & 0xF0
            if kind == PUBLISH:
                await self._on_publish(hdr, n)
            elif kind == PUBACK and n == 2:
                self._puback(struct.unpack("!H", await self._r.readexactly(2))[0])
            else:
                await self._discard(n)

    async def _on_publish(self, hdr, n):
        r = self._r
        tl = struct.unpack("!H", await r.readexactly(2))[0]
        if tl + 2 > n:
            raise MQTTError("bad PUBLISH")
        topic = await r.readexactly(tl)
        n -= tl + 2
        qos = (hdr >> 1) & 3
        pid = 0
        if qos:
            pid = struct.unpack("!H", await r.readexactly(2))[0]
            n -= 2
        if n > MAX_PACKET:
            await self._discard(n)
            payload = None  # too large: the handler reports it
        else:
            payload = await r.readexactly(n) if n else b""
        if qos == 1:
            await self._send(struct.pack("!BBH", PUBACK, 2, pid))
        if self.on_message:
            await self.on_message(topic, payload, bool(hdr & 1))

    async def _pinger(self):
        # Keepalive and QoS 1 retransmission timer (timeouts, not input polling).
        ka = self.keepalive * 1000  # ms; 0: no keepalive
        step = min(ka // 2, RETRY_MS) if ka else RETRY_MS
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
                if ka and quiet >= ka // 2:
                    quiet = 0
                    await self._send(bytes((PINGREQ, 0)))
                if self._inflight:
                    await self._resend(RETRY_MS)
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

    async def disconnect(self):
        self._stop = True
        try:
            await self._send(bytes((DISCONNECT, 0)))
        except Exception:
            pass
        self._close()

    async def run(self):
        """Stay connected forever: connect, serve, reconnect with backoff."""
        backoff = 250
        while not self._stop:
            try:
                await self._open()
                self.connected = True
                self.connects += 1
                self._last_rx = clock.now()
                backoff = 250
                self._status("connected", "%s:%d" % (self.host, self.port))
                if self._inflight:
                    await self._resend(0)  # unacknowledged before the link dropped
                if self.on_connect:
                    await self.on_connect()
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
                self._status("disconnected", "keepalive timeout")
            except ValueError as e:
                # mbedTLS reports a certificate that does not verify this way.
                why = "tls: certificate verify failed: " if self.ssl else ""
                self._status("disconnected", why + _text(e))
            except Exception as e:  # the link must never take the light down
                why = _text(e)
                self._status("disconnected", "tls: " + why if self.ssl and "MBEDTLS" in why else why)
            finally:
                self._close()
            if self._stop:
                break
            jitter = os.urandom(1)[0] * backoff // 512  # up to +50 %
            await asyncio.sleep_ms(backoff + jitter)
            backoff = min(backoff * 2, 30000)
