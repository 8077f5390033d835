# Unix-port board layer: simulated pins, and (in board_unix_emu.py, loaded
# only when a board asks) emulations of what an ESP32 does that the unix port
# would hide: its UART console, its RTC after power-on, a Wi-Fi fault. A GPIO
# line cannot exist here, so the output pin records its level and duty, and
# the button pin is driven by a simulated press (injected over the serial
# link) that raises "IRQs" exactly as a real edge would; a sense input
# follows the output pin, "sense": {"delay_us": N} later (a photodiode's slow
# edge). These two modules are the only ones that emulate hardware.
import asyncio
import time

import machine


_attached = []  # pins with an IRQ handler attached, for attached()


class SimPin(machine.PinBase):
    def __init__(self, name, level=0):
        self.name = name
        self._level = level
        self._handler = None

    def value(self, v=None):
        if v is None:
            return self._level
        v = 1 if v else 0
        if v != self._level:
            self._level = v
            h = self._handler
            if h:
                h(self)
        return None

    def irq(self, handler=None, trigger=None):
        self._handler = handler
        if handler is None:
            if self in _attached:
                _attached.remove(self)
        elif self not in _attached:
            _attached.append(self)


def attached():
    """Names of the pins with an IRQ handler still attached (for the REPL)."""
    return [p.name for p in _attached]


class Output:
    """PWM-or-relay output on a simulated pin; reports what the pin holds."""

    def __init__(self, d):
        self.pwm = d.get("kind", "pwm") == "pwm"
        self.active_low = bool(d.get("active_low", False))
        self.pin = SimPin(d.get("pin", "LED"), 1 if self.active_low else 0)
        self.duty = 0
        self.wire = None  # a sense input wired to this pin, if the board has one
        self.wire_delay_us = 0  # the sense input follows the pin this much later

    def write(self, on, brightness):
        if self.pwm:
            d = brightness * 257 if on else 0
            self.duty = 65535 - d if self.active_low else d
            self.pin.value(1 if self.duty else 0)
        else:
            self.duty = 65535 if on != self.active_low else 0
            self.pin.value(1 if on != self.active_low else 0)
        if self.wire:
            if self.wire_delay_us:
                asyncio.create_task(self._follow(self.pin.value(), time.ticks_us()))
            else:
                self.wire.value(self.pin.value())

    async def _follow(self, level, t0):
        # asyncio sleeps in whole ticks_ms, which can end up to 1 ms early:
        # the rest of the delay is waited out on ticks_us.
        d = self.wire_delay_us
        await asyncio.sleep_ms(d // 1000)
        while time.ticks_diff(time.ticks_us(), t0) < d:
            await asyncio.sleep_ms(0)
        self.wire.value(level)

    def report(self):
        return '{"level":%d,"duty_u16":%d}' % (self.pin.value(), self.duty)


def sense_pin(d, output):
    """A simulated input wired to the output pin: it follows the pin's level,
    delay_us later (a photodiode's slow edge), at once by default."""
    p = SimPin(d.get("pin", "SENSE"), output.pin.value())
    output.wire = p
    output.wire_delay_us = d.get("delay_us", 0)
    return p


# The simulated "IRQ" runs in a task, not an interrupt, so a plain asyncio
# Event carries it. (On the unix port a ThreadSafeFlag is polled by select
# every millisecond, which would add up to 1 ms to every wakeup.)
Flag = asyncio.Event


def button_pin(d):
    active_low = bool(d.get("active_low", True))
    return SimPin(d.get("pin", "BOOT"), 1 if active_low else 0)


def button_irq(pin, handler):
    pin.irq(handler)


def irq_detach(pin):
    pin.irq(handler=None)


async def press(pin, active_low, hold_ms=50, bounces=3):
    """Drive the simulated button: a bouncing press, a hold, a release."""
    down = 0 if active_low else 1
    up = 1 - down
    for _ in range(bounces):
        pin.value(down)
        pin.value(up)
    pin.value(down)
    await asyncio.sleep_ms(hold_ms)
    for _ in range(bounces):
        pin.value(up)
        pin.value(down)
    pin.value(up)


async def network_up(cfg):
    f = cfg["board"].get("faults")
    if f:
        import board_unix_emu

        board_unix_emu.wifi_fault(f)
    return True


def watchdog(bdef):
    return None  # no watchdog on the unix port: a stuck process is seen by the host


def watchdog_park(wdt):
    pass


def rtc_year(bdef):
    if bdef.get("rtc"):
        import board_unix_emu

        return board_unix_emu.rtc_year(bdef)
    return time.gmtime()[0]


def rtc_set(bdef, unix_seconds):
    import board_unix_emu

    board_unix_emu.rtc_set(bdef, unix_seconds)


def console(d):
    if not d:
        return None  # the serial link's plain console
    from board_unix_emu import EmuConsole  # only a board that emulates it pays for it

    return EmuConsole(d)
