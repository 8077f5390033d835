# The serial link on the console (stdin/stdout; the UART/USB console on a
# board): one JSON object per line in both directions. Lines the host sends
# are read as their bytes arrive, into buffers allocated once; a Ctrl-C byte
# stops the firmware. Every line the host sends is answered with exactly one
# line (its reply, or an error): the host counts replies as credits, so that
# it never has more than the console's window (rx_window in boot and info) in
# flight: a board's console buffer is small and has no flow control.
import asyncio
import gc
import select
import sys

import board
import clock
import protocol
from protocol import BadInput

RX_WINDOW = 256  # bytes the host may have in flight: fits the ESP32's 260-byte buffer
SET_FIELDS = ("op", "id", "state", "brightness")
PLAIN_FIELDS = ("op", "id")
PING_FIELDS = ("op", "id", "t")


# A board's stdin hands out one byte per call (its readinto blocks until the
# whole buffer is filled), so bytes are taken one at a time while the poller
# says more are waiting, into a one-byte buffer allocated once.
class Console:
    def __init__(self, d=None):
        self.inp = sys.stdin.buffer
        self.reader = asyncio.StreamReader(self.inp)
        self.poller = select.poll()
        self.poller.register(self.inp, select.POLLIN)
        self.one = bytearray(1)
        self.window = (d or {}).get("rx_window", RX_WINDOW)

    def ready(self):
        for _ in self.poller.ipoll(0):  # ipoll: no list allocated
            return True
        return False

    def _byte(self):
        try:
            n = self.inp.readinto(self.one)
        except OSError:
            return -1
        return self.one[0] if n else -1

    async def _next(self):
        # The next byte, waited for; -1 when the console is closed or hung up.
        try:
            n = await self.reader.readinto(self.one)
        except OSError:
            return -1
        return self.one[0] if n else -1

    async def readinto(self, buf):
        """Wait for input; fill buf with what is waiting. Returns the count,
        0 when the console is closed or hung up."""
        c = await self._next()
        if c < 0:
            return 0
        buf[0] = c
        i = 1
        end = len(buf)
        while i < end and self.ready():
            c = self._byte()
            if c < 0:
                break
            buf[i] = c
            i += 1
        return i

    def write(self, s):
        # One write per line: each write wakes the host's reader (on the Unix
        # port, a system call on a pty); a line in two pieces wakes it twice.
        # A line made with its newline (a change, every command) is written
        # as it is: no copy.
        if not s.endswith("\n"):
            try:
                s += "\n"
            except MemoryError:  # no room for the copy: the newline on its own
                sys.stdout.write(s)
                s = "\n"
        sys.stdout.write(s)


class SerialLink:
    name = "serial"

    def __init__(self, app):
        self.app = app
        self.buf = bytearray(protocol.MAX_LEN)
        self.chunk = bytearray(64)
        d = app.bdef.get("console")
        self.console = board.console(d) or Console(d)  # the board's, if it emulates one
        self.n = 0
        self.overflow = False
        self.lines = 0
        self.errors = 0

    def write(self, s):
        self.console.write(s)

    async def report(self, body):
        self.write('{"ev":"change",%s,"t_tx":%d}\n' % (body, clock.now()))

    def status(self, what, status, detail=""):
        self.write('{"ev":"%s","status":"%s","detail":"%s"}' % (what, status, detail.replace('"', "'")))

    def error(self, e):
        self.errors += 1
        self.write(protocol.error_json(e))

    async def run(self):
        con = self.console
        chunk = self.chunk
        buf = self.buf
        size = len(buf)
        while True:
            n = await con.readinto(chunk)
            if not n:
                # Console closed or hung up: keep the light (and MQTT) running.
                await asyncio.sleep_ms(500)
                continue
            i = 0
            while i < n:
                c = chunk[i]
                i += 1
                if c == 3:
                    raise KeyboardInterrupt  # Ctrl-C: back to the REPL
                if c == 10 or c == 13:
                    await self._line()
                elif self.n < size:
                    buf[self.n] = c
                    self.n += 1
                else:
                    self.overflow = True

    async def _line(self):
        n = self.n
        self.n = 0
        if self.overflow:
            self.overflow = False
            self.error(BadInput("too_long", "line longer than %d bytes" % protocol.MAX_LEN))
            return
        if n == 0:
            return
        t_rx = clock.now()
        self.lines += 1
        cmd_id = None
        try:
            obj = protocol.decode(self.buf, n)
            cmd_id = protocol.command_id(obj)
            await self._dispatch(obj, cmd_id, t_rx)
        except BadInput as e:
            if e.cmd_id is None:
                e.cmd_id = cmd_id
            self.error(e)
        except Exception as e:  # a bug must not take the light down
            self.error(BadInput("internal", type(e).__name__, cmd_id))

    async def _dispatch(self, obj, cmd_id, t_rx):
        op = obj.get("op")
        app = self.app
        if op == "ping":
            protocol.unknown_fields(obj, PING_FIELDS, cmd_id)
            self.write('{"ev":"pong","id":"%s","t_rx":%d,"ticks":%d}' % (cmd_id or "", t_rx, clock.now()))
        elif op == "set":
            state, bri = protocol.state_fields(obj, SET_FIELDS, cmd_id)
            await app.command(self, "serial", cmd_id, state, bri, t_rx)
        elif op == "get":
            protocol.unknown_fields(obj, PLAIN_FIELDS, cmd_id)
            self.write('{"ev":"state","id":"%s",%s,"pin":%s,"mqtt":"%s"}' % (
                cmd_id or "", app.light.state_body(), app.light.output.report(), app.mqtt_status()))
        elif op == "press":
            protocol.unknown_fields(obj, PLAIN_FIELDS, cmd_id)
            ok = app.press()
            if not ok:
                if ok is None:
                    raise BadInput("busy", "too many presses queued", cmd_id)
                raise BadInput("no_button", "this board has no button", cmd_id)
            self.write('{"ev":"ack","op":"press","id":"%s"}' % (cmd_id or ""))
        elif op == "info":
            protocol.unknown_fields(obj, PLAIN_FIELDS, cmd_id)
            gc.collect()
            app.gc_free = 0  # not a collection settle should count
            self.write(app.info_json(cmd_id, gc.mem_free(), gc.mem_alloc()))
        elif op == "heap":
            # The collections counted (App.settle) and the heap as it is;
            # apart from info, whose line is long enough for a 115200-baud
            # console already.
            protocol.unknown_fields(obj, PLAIN_FIELDS, cmd_id)
            self.write('{"ev":"heap","id":"%s","mem_free":%d,"gc_between":%d,"gc_forced":%d}' % (
                cmd_id or "", gc.mem_free(), app.gc_between, app.gc_forced))
        elif op is None:
            raise BadInput("no_op", "a command needs an op", cmd_id)
        else:
            raise BadInput("unknown_op", "unknown op", cmd_id)

