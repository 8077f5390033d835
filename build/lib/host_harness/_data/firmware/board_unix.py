# Unix-port board layer: simulated pins. A GPIO line cannot exist here, so the
# output pin records its level and duty, and the button pin is driven by a
# simulated press (injected over the serial link) that raises "IRQs" exactly
# as a real edge would.
import asyncio
import machine


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


class Output:
    """PWM-or-relay output on a simulated pin; reports what the pin holds."""

    def __init__(self, d):
        self.pwm = d.get("kind", "pwm") == "pwm"
        self.active_low = bool(d.get("active_low", False))
        self.pin = SimPin(d.get("pin", "LED"), 1 if self.active_low else 0)
        self.duty = 0
        self.wire = None  # a sense input wired to this pin, if the board has one

    def write(self, on, brightness):
        if self.pwm:
            d = brightness * 257 if on else 0
            self.duty = 65535 - d if self.active_low else d
            self.pin.value(1 if self.duty else 0)
        else:
            self.duty = 65535 if on != self.active_low else 0
            self.pin.value(1 if on != self.active_low else 0)
        if self.wire:
            self.wire.value(self.pin.value())

    def report(self):
        return '{"level":%d,"duty_u16":%d}' % (self.pin.value(), self.duty)


def sense_pin(d, output):
    """A simulated input wired to the output pin: it follows the pin's level."""
    p = SimPin(d.get("pin", "SENSE"), output.pin.value())
    output.wire = p
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
    return True
