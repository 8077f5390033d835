# ESP32 board layer: machine.Pin / machine.PWM, pin IRQs, the watchdog, the
# RTC and the console. Kept thin: everything else is shared with the unix port.
#
# An ESP32's pin IRQs are never hard interrupts: the GPIO ISR hands the
# handler to mp_sched_schedule, so it runs between bytecodes of the running
# task, not at the edge (irq(hard=True) is refused). A stamp taken in the
# handler is scheduler time: late by whatever the interpreter was doing.
import asyncio
import time

from machine import PWM, RTC, WDT, Pin


class Output:
    def __init__(self, d):
        self.pwm_mode = d.get("kind", "pwm") == "pwm"
        self.active_low = bool(d.get("active_low", False))
        self.pin = Pin(d["pin"], Pin.OUT, value=1 if self.active_low else 0)
        self.duty = 0
        self.pwm = None
        if self.pwm_mode:
            self.pwm = PWM(self.pin, freq=d.get("freq", 1000), duty_u16=65535 if self.active_low else 0)

    def write(self, on, brightness):
        pwm = self.pwm
        if pwm:
            d = brightness * 257 if on else 0
            self.duty = 65535 - d if self.active_low else d
            pwm.duty_u16(self.duty)
        else:
            v = 1 if on != self.active_low else 0
            self.duty = 65535 if v else 0
            self.pin.value(v)

    def report(self):
        return '{"level":%d,"duty_u16":%d}' % (1 if self.duty else 0, self.duty)


def _input(d, pull):
    p = Pin.PULL_UP if pull == "up" else (Pin.PULL_DOWN if pull == "down" else None)
    # pull=None (no pull) is what the port takes; the stubs type it int only.
    return Pin(d["pin"], Pin.IN, p)  # pyright: ignore[reportArgumentType]


def sense_pin(d, output):
    return _input(d, d.get("pull"))


# IRQ to task: the one primitive safe to set from an interrupt handler.
Flag = asyncio.ThreadSafeFlag


def button_pin(d):
    return _input(d, d.get("pull", "up"))


def button_irq(pin, handler):
    pin.irq(handler=handler, trigger=Pin.IRQ_FALLING | Pin.IRQ_RISING)


def irq_detach(pin):
    pin.irq(handler=None)  # the port sets the trigger to none as well


press = None  # a real button is pressed by a finger; see Button.inject()


async def network_up(cfg):
    """Bring Wi-Fi up (station mode). Returns True once connected."""
    w = cfg.get("wifi")
    if not w:
        return True
    import network

    sta = network.WLAN(network.STA_IF)
    sta.active(True)
    # Power save off unless asked (config wifi.pm): with it on, the radio
    # sleeps between beacons and a command waits up to a DTIM period for it
    # (an ESP32-C3: pings of 101-3978 ms with it, 2-5 ms without).
    pm = w.get("pm") or "none"
    W = network.WLAN
    sta.config(pm=W.PM_NONE if pm == "none" else (W.PM_PERFORMANCE if pm == "min" else W.PM_POWERSAVE))
    if not sta.isconnected():
        sta.connect(w["ssid"], w.get("password", ""))
        # Wi-Fi association has no event to wait on in MicroPython: check it
        # at a coarse interval while connecting (not an input poll).
        for _ in range(300):
            if sta.isconnected():
                break
            await asyncio.sleep_ms(100)
    return sta.isconnected()


def watchdog(bdef):
    """The task watchdog, fed by the event loop: a loop stuck for wdt_ms
    (board option, default 10 s; 0: none) resets the board. It cannot be
    stopped once started: after Ctrl-C the REPL has it too (see app.py)."""
    ms = bdef.get("wdt_ms", 10000)
    return WDT(timeout=ms) if ms else None


def watchdog_park(wdt):
    # The watchdog cannot be stopped, only given a new timeout: after Ctrl-C
    # the REPL (and mpremote's raw REPL) gets an hour before a reset.
    wdt.feed()
    WDT(timeout=3_600_000)


def rtc_year(bdef):
    return time.gmtime()[0]


def rtc_set(bdef, unix_seconds):
    # The port's epoch may be 1970 or 2000, depending on the version.
    t = time.gmtime(unix_seconds - (946684800 if time.gmtime(0)[0] == 2000 else 0))
    RTC().datetime((t[0], t[1], t[2], t[6], t[3], t[4], t[5], 0))


def console(d):
    return None  # the serial link's console: stdin/stdout are the UART (or USB) console
