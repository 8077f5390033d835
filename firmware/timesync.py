# Wall-clock time before TLS. An ESP32's RTC reads 2000-01-01 after
# power-on and its mbedTLS checks certificate dates: no TLS connect can
# succeed until the time is set. A small SNTP client (RFC 4330) over UDP,
# awaited with a timeout (the event loop keeps running meanwhile); on
# failure a clear error on the console and a retry with backoff.
# Config: "ntp": {"host": "pool.ntp.org", "port": 123, "timeout_ms": 2000}.
import asyncio
import socket
import struct

from micropython import const

import board

MIN_YEAR = const(2024)  # an RTC before this year has not been set
_NTP_1970 = const(2208988800)  # seconds from 1900 (NTP) to 1970
_RETRY_MS = const(1000)
_RETRY_MAX_MS = const(60000)


async def query(host, port, timeout_ms):
    """Seconds since 1970 by one SNTP exchange; raises on no or a bad answer."""
    addr = socket.getaddrinfo(host, port, 0, socket.SOCK_DGRAM)[0][-1]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.setblocking(False)
        s.connect(addr)
        req = bytearray(48)
        req[0] = 0x23  # LI 0, version 4, mode 3 (client)
        s.send(req)
        data = await asyncio.wait_for_ms(asyncio.StreamReader(s).read(48), timeout_ms)
    finally:
        s.close()
    if not data or len(data) < 48 or data[0] & 7 != 4:
        raise ValueError("not an SNTP server reply")
    secs = struct.unpack_from("!I", data, 40)[0]
    if not secs:
        raise ValueError("the server does not know the time (kiss-o'-death)")
    return secs - _NTP_1970


async def ensure(app):
    """Return once the RTC holds a plausible time (at once if it does)."""
    bdef = app.bdef
    if board.rtc_year(bdef) >= MIN_YEAR:
        return
    n = app.cfg.get("ntp") or {}
    host = n.get("host", "pool.ntp.org")
    port = n.get("port", 123)
    timeout_ms = n.get("timeout_ms", 2000)
    delay = _RETRY_MS
    while True:
        app.serial.status("time", "asking", "%s:%d" % (host, port))
        try:
            board.rtc_set(bdef, await query(host, port, timeout_ms))
            if board.rtc_year(bdef) >= MIN_YEAR:
                app.serial.status("time", "set", "%s:%d" % (host, port))
                return
            why = "the server's time is before %d" % MIN_YEAR
        except asyncio.TimeoutError:
            why = "no answer from %s:%d within %d ms" % (host, port, timeout_ms)
        except Exception as e:
            why = "%s: %s" % (type(e).__name__, e)
        app.fault(
            "time_unset",
            "TLS needs the time and it is not set: %s (retry in %d ms)" % (why, delay),
            "time",
        )
        await asyncio.sleep_ms(delay)
        delay = min(delay * 2, _RETRY_MAX_MS)
