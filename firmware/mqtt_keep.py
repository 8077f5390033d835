# Keeping an MQTT connection up (mqtt.py's MQTTClient, c below): connect,
# serve, reconnect for good with exponential backoff and jitter; while up, a
# keepalive task pings, declares the connection dead when the broker stops
# answering, and sends again what the broker has not acknowledged in time.
import asyncio
import gc
import os
import time

from micropython import const

import mqtt_proto

_KA_PING = const(1)  # what mqtt_proto.keepalive() returns
_KA_DEAD = const(2)
_RETRY_MS = const(5000)  # an unacknowledged QoS 1 PUBLISH is sent again after this
_BACKOFF_MS = const(250)
_BACKOFF_MAX_MS = const(30000)


async def run(c):
    # Stay connected forever: connect, serve, reconnect with backoff.
    backoff = _BACKOFF_MS
    while True:
        gc.collect()  # a connection's buffers in one piece, not in fragments
        up = False
        try:
            await c._open()
            up = True
            c.connected = True
            backoff = _BACKOFF_MS
            if c._inflight:
                await c._resend(0)  # unacknowledged before the link dropped
            await c.link.on_connect()
            # Up, the state, availability... published; "connected" is
            # said once the broker has acknowledged every subscription.
            c._subs_due = len(c.subs)
            if not c._subs_due:
                c._up()
            c._reader_task = asyncio.create_task(c._reader())
            t = asyncio.create_task(_pinger(c))
            try:
                await c._reader_task
            finally:
                t.cancel()
                c._reader_task = None
        except asyncio.CancelledError:
            if c.connected is not None:  # not the keepalive's doing
                raise
            c.link.on_status("disconnected", "keepalive timeout")
        except Exception as e:  # the link must never take the light down
            why = " ".join(str(e).split()) or type(e).__name__  # one line
            if why.isdigit():
                why = "[Errno %s]" % why  # an OSError with its number only
            if c._hs and isinstance(e, ValueError):
                # How mbedTLS reports a certificate that does not verify.
                why = "tls: certificate verify failed: " + why
            elif c._hs and "ECONNREFUSED" not in why:
                why = "tls: handshake failed: " + why
            c.link.on_status("disconnected", why)
        finally:
            c.close()
            c._lock = asyncio.Lock()  # not held over by a send stuck on the old link
        if not up:
            c._addr = None  # the next attempt resolves the name again
        jitter = os.urandom(1)[0] * backoff // 512  # up to +50 %
        await asyncio.sleep_ms(backoff + jitter)
        backoff = min(backoff * 2, _BACKOFF_MAX_MS)


async def _pinger(c):
    # Keepalive and QoS 1 retransmission timer (timeouts, not input polling).
    ka = c.keepalive * 1000  # ms; 0: no keepalive
    step = min(ka // 2, _RETRY_MS) if ka else _RETRY_MS
    t = [0, 0]  # ms without a packet, ms since the last PINGREQ
    last = time.ticks_ms()
    seen = c.t_packet
    while True:
        await asyncio.sleep_ms(step)
        now = time.ticks_ms()
        p = c.t_packet  # changes with every packet that arrives
        what = mqtt_proto.keepalive(t, ka, time.ticks_diff(now, last), p != seen)
        last = now
        seen = p
        if what == _KA_DEAD:
            # Half-open connection: nothing heard for 1.5 keepalives.
            c.connected = None  # declared dead: see run()
            if c._reader_task:
                c._reader_task.cancel()
            return
        try:
            if c._lock.locked():
                continue  # a send is stuck: no pile-up; the check above ends it
            if what == _KA_PING:
                await c._send(b"\xc0\x00")  # PINGREQ
            if c._owed:
                await c._pay()  # held too long: the broker's PUBACK is late
            if c._inflight:
                await c._resend(_RETRY_MS)
            await c.link.on_tick()
        except Exception:
            return
