# Unix-port board layer, the emulations of what an ESP32 does that the unix
# port would hide, each loaded only when the board asks for it:
#   "console": {"rx_bytes": 388, "baud": 115200, "paced_output": false}
#   "rtc": {"year": 2000}           the RTC as it reads after power-on
#   "faults": {"wifi_errors": N}    the first N Wi-Fi connects raise OSError
import asyncio
import time

from serial_link import Console

# -- faults -------------------------------------------------------------------
_wifi_errors = 0


def wifi_fault(f):
    global _wifi_errors
    if _wifi_errors < f.get("wifi_errors", 0):
        _wifi_errors += 1
        raise OSError("Wifi Internal Error")  # what a second sta.connect() may raise


# -- RTC ----------------------------------------------------------------------
# Seconds since 1970 = time.time() + _rtc_off. An emulated RTC starts at
# January 1st of its year, as an ESP32's does after power-on.
_rtc_off = 0
_rtc_set = False


def _rtc_init(bdef):
    global _rtc_off, _rtc_set
    r = bdef.get("rtc")
    if r and not _rtc_set:
        y = r.get("year", 2000)
        _rtc_off = time.mktime((y, 1, 1, 0, 0, 0, 0, 0)) - time.time()
        _rtc_set = True


def rtc_year(bdef):
    _rtc_init(bdef)
    return time.gmtime(time.time() + _rtc_off)[0]


def rtc_set(bdef, unix_seconds):
    global _rtc_off
    _rtc_init(bdef)
    _rtc_off = unix_seconds - time.time()


class EmuConsole(Console):
    """The ESP32's UART console: bytes arrive at the baud rate into a buffer
    of rx_bytes (the driver's 260 plus the 128-byte FIFO) that drops what
    does not fit, there being no flow control; with paced_output, a write
    blocks for as long as its bytes take on the wire. Bytes the host wrote are
    taken from the pty onto a "wire" (at most _WIRE bytes; the rest wait in
    the pty) and arrive from there one byte time after another."""

    _WIRE = 512

    def __init__(self, d):
        super().__init__(d)
        self.cap = d.get("rx_bytes", 388)
        self.rx = bytearray(self.cap)
        self.rx_head = 0
        self.rx_n = 0
        self.wire = bytearray(self._WIRE)
        self.w_head = 0
        self.w_n = 0
        baud = d.get("baud", 115200)
        self.byte_us = 10_000_000 // baud if baud else 0  # 8N1: 10 bits a byte
        self.t_next = time.ticks_us()  # when the wire's next byte arrives
        self.t_look = self.t_next  # when input was last taken from the pty
        self.paced = bool(d.get("paced_output", False)) and self.byte_us
        self.dropped = 0

    def _pull(self, first=-1):
        # Move what the pty holds onto the wire; bytes reaching an empty wire
        # started to arrive no earlier than the last look.
        now = time.ticks_us()
        if self.w_n == 0 and time.ticks_diff(self.t_next, self.t_look) < 0:
            self.t_next = time.ticks_add(self.t_look, self.byte_us)
        self.t_look = now
        w = self.wire
        if first >= 0:
            self._wire(first)
        while self.w_n + self.w_head < len(w) and self.ready():
            c = self._byte()
            if c < 0:
                break
            self._wire(c)

    def _wire(self, c):
        if c == 3:
            raise KeyboardInterrupt  # the console's ISR sees Ctrl-C on arrival
        self.wire[self.w_head + self.w_n] = c
        self.w_n += 1

    def _arrive(self):
        # Every byte whose time has come lands in the buffer, or is dropped.
        now = time.ticks_us()
        while self.w_n and (not self.byte_us or time.ticks_diff(now, self.t_next) >= 0):
            c = self.wire[self.w_head]
            self.w_head += 1
            self.w_n -= 1
            if self.rx_n < self.cap:
                self.rx[(self.rx_head + self.rx_n) % self.cap] = c
                self.rx_n += 1
            else:
                self.dropped += 1
            self.t_next = time.ticks_add(self.t_next, self.byte_us)
        if self.w_n == 0:
            self.w_head = 0
        elif self.w_head > len(self.wire) // 2:
            self.wire[0 : self.w_n] = self.wire[self.w_head : self.w_head + self.w_n]
            self.w_head = 0

    async def readinto(self, buf):
        while True:
            self._pull()
            self._arrive()
            if self.rx_n:
                n = min(self.rx_n, len(buf))
                for i in range(n):
                    buf[i] = self.rx[(self.rx_head + i) % self.cap]
                self.rx_head = (self.rx_head + n) % self.cap
                self.rx_n -= n
                return n
            if self.w_n:
                wait = time.ticks_diff(self.t_next, time.ticks_us())
                await asyncio.sleep_ms(wait // 1000 + 1)
                continue
            c = await self._next()
            if c < 0:
                return 0
            self.t_look = time.ticks_us()
            self._pull(c)

    def write(self, s):
        super().write(s)
        if self.paced:
            n = len(s) + (0 if s.endswith("\n") else 1)
            time.sleep_us(n * self.byte_us)  # the whole loop waits, as on a board
