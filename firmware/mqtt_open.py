# Opening an MQTT connection: resolve, connect, TLS, CONNECT/CONNACK,
# SUBSCRIBE. Loaded by mqtt.py for each connect and dropped again, so this
# code costs no RAM while the link is up. (Few names: on the Unix port every
# new name costs RAM for good once a module holding it is loaded.)
import socket
import struct
from asyncio import core, wait_for  # pyright: ignore[reportAttributeAccessIssue]  # core: MicroPython's asyncio internals, not in the stubs
from asyncio.stream import Stream  # pyright: ignore[reportMissingImports]  # in MicroPython's asyncio; the stubs lack it
from errno import EINPROGRESS

from micropython import const

from mqtt_proto import _remaining, _str

_CONNECT = const(0x10)
_CONNACK = const(0x20)
_SUBSCRIBE = const(0x82)
_IPPROTO_TCP = const(6)  # socket option numbers, the same in Linux and lwIP
_TCP_NODELAY = const(1)  # small packets at once, no Nagle
_CONNACK_S = const(10)


async def open(self):
    # self: the MQTTClient. First a TCP (and TLS) stream to the broker. The
    # name is resolved once per failure cycle: getaddrinfo blocks the whole
    # loop while it waits for DNS, so a reconnect after a dropped link reuses
    # the address, and only a failed connect makes the next attempt resolve
    # again (run() clears _addr).
    ai = self._addr
    if ai is None:
        ai = socket.getaddrinfo(self.host, self.port, 0, socket.SOCK_STREAM)[0]
    s = socket.socket(ai[0], ai[1], ai[2])
    self._r = s  # closed by close(), whatever happens below
    s.setblocking(False)
    try:
        s.connect(ai[-1])
    except OSError as e:
        if e.errno != EINPROGRESS:
            raise
    self._addr = ai
    try:
        s.setsockopt(_IPPROTO_TCP, _TCP_NODELAY, 1)  # before TLS wraps it
    except Exception:
        pass
    if self.ssl:
        import mqtt_tls  # only a TLS device pays for it

        try:
            ctx = mqtt_tls.context(self.ssl)
        except Exception as e:
            raise OSError("tls: cannot load the certificates: %s" % e)
        self._hs = True  # the TLS handshake goes on until the CONNACK
        s = ctx.wrap_socket(s, server_hostname=self.host, do_handshake_on_connect=False)
        s.setblocking(False)
    self._w = Stream(s)
    yield core._io_queue.queue_write(s)  # connected (or failed: the CONNECT write tells)

    # CONNECT, then CONNACK
    flags = 0x02 if self.clean else 0
    data = bytearray(_str(self.client_id))
    if self.will:
        t, m, retain, qos = self.will
        flags |= 0x04 | (qos << 3) | (0x20 if retain else 0)
        data += _str(t) + _str(m)
    if self.user is not None:
        flags |= 0x80
        data += _str(self.user)
        if self.password is not None:
            flags |= 0x40
            data += _str(self.password)
    data = _str("MQTT") + bytes((4, flags)) + struct.pack("!H", self.keepalive) + data
    await self._send(bytes((_CONNECT,)) + _remaining(len(data)) + data)
    hdr, n = await wait_for(self._read_packet(), _CONNACK_S)
    if hdr != _CONNACK or n != 2:
        raise OSError("expected CONNACK")
    await self._fill(2)
    self._hs = False
    if self.buf[1] != 0:
        raise OSError("connection refused, code %d" % self.buf[1])
    for t, qos in self.subs:
        self._pid = self._pid % 65535 + 1
        data = struct.pack("!H", self._pid) + _str(t) + bytes((qos,))
        await self._send(bytes((_SUBSCRIBE,)) + _remaining(len(data)) + data)
