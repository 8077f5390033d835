# A small MQTT 3.1.1 client on asyncio streams, written for this firmware.
#
# Event-driven: one reader task parses packets as their bytes arrive and hands
# each PUBLISH to on_message at once. A keepalive task sends PINGREQ and
# declares the connection dead when the broker stops answering. run() keeps
# the connection up forever, reconnecting with exponential backoff and jitter.
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

MAX_PACKET = 1024  # larger incoming packets are read and dropped


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


class MQTTClient:
    def __init__(self, client_id, host, port=1883, user=None, password=None,
                 keepalive=30, ssl=None, clean=True):
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
            r, w = await asyncio.open_connection(self.host, self.port, ssl=self.ssl)
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
            hdr |= qos << 1
            n += 2
            pkt = bytes((hdr,)) + _remaining(n) + t + struct.pack("!H", self._next_pid()) + msg
        else:
            pkt = bytes((hdr,)) + _remaining(n) + t + msg
        await self._send(pkt)

    async def _reader(self):
        while True:
            hdr, n = await self._read_packet()
            kind = hdr & 0xF0
            if kind == PUBLISH:
                await self._on_publish(hdr, n)
            elif kind in (PINGRESP, SUBACK, PUBACK):
                await self._discard(n)
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
        ka = self.keepalive
        while True:
            await asyncio.sleep(ka / 2)
            if clock.diff(clock.now(), self._last_rx) > ka * 1500000:
                # Half-open connection: nothing heard for 1.5 keepalives.
                self._dead = True
                if self._reader_task:
                    self._reader_task.cancel()
                return
            try:
                await self._send(bytes((PINGREQ, 0)))
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
            except (OSError, MQTTError, EOFError, asyncio.TimeoutError) as e:
                self._status("disconnected", str(e) or type(e).__name__)
            finally:
                self._close()
            if self._stop:
                break
            jitter = os.urandom(1)[0] * backoff // 512  # up to +50 %
            await asyncio.sleep_ms(backoff + jitter)
            backoff = min(backoff * 2, 30000)
