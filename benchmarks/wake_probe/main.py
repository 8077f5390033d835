# A MicroPython process that waits for one byte on a TCP socket and answers
# with its ticks_us when the wait ended (on the Unix port, the host's
# CLOCK_MONOTONIC): what waking costs each way of waiting. Run by
# benchmarks/wake.py; not part of the firmware.
#   micropython main.py WAIT PORT
# WAIT: read (a blocking read, as umqtt.simple's wait_msg), poll (select.poll
# then a read, what asyncio does underneath), asyncio (a task awaiting the
# stream, as lightctl's MQTT reader), firmware (the same task beside the waits
# lightctl's firmware has while idle: its console on stdin and a timer task).
import asyncio
import select
import socket
import sys
import time

WAIT = sys.argv[1]
PORT = int(sys.argv[2])
buf = bytearray(1)
mv = memoryview(buf)


def connect():
    s = socket.socket()
    s.connect(socket.getaddrinfo("127.0.0.1", PORT)[0][-1])
    return s


def by_read():
    s = connect()
    while s.readinto(buf):
        t = time.ticks_us()
        s.write(b"%d\n" % t)


def by_poll():
    s = connect()
    s.setblocking(False)
    p = select.poll()
    p.register(s, select.POLLIN)
    while True:
        p.poll()
        t = time.ticks_us()
        if not s.readinto(buf):
            return
        s.write(b"%d\n" % t)


async def _reader():
    r, w = await asyncio.open_connection("127.0.0.1", PORT)
    while True:
        k = r.s.readinto(mv)  # what arrived already, then the wait (as the firmware reads)
        if k is None:
            k = await r.readinto(mv)
        t = time.ticks_us()
        if not k:
            return
        w.write(b"%d\n" % t)


async def _console():
    rd = asyncio.StreamReader(sys.stdin.buffer)
    one = bytearray(1)
    while await rd.readinto(one):
        pass


async def _timer():
    while True:
        await asyncio.sleep_ms(5000)


async def by_asyncio(firmware):
    tasks = [asyncio.create_task(_console()), asyncio.create_task(_timer())] if firmware else []
    await _reader()
    for t in tasks:
        t.cancel()


if WAIT == "read":
    by_read()
elif WAIT == "poll":
    by_poll()
else:
    asyncio.run(by_asyncio(WAIT == "firmware"))
