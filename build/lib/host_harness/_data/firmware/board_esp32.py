# ESP32 board layer: machine.Pin / machine.PWM and a pin IRQ for the button.
# Kept thin: everything else is shared with the unix port.
import asyncio
from machine import PWM, Pin


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
        if self.pwm_mode:
            d = brightness * 257 if on else 0
            self.duty = 65535 - d if self.active_low else d
            self.pwm.duty_u16(self.duty)
        else:
            v = 1 if on != self.active_low else 0
            self.duty = 65535 if v else 0
            self.pin.value(v)

    def report(self):
        return '{"level":%d,"duty_u16":%d}' % (1 if self.duty else 0, self.duty)


def _input(d, pull):
    p = Pin.PULL_UP if pull == "up" else (Pin.PULL_DOWN if pull == "down" else None)
    return Pin(d["pin"], Pin.IN, p)


def sense_pin(d, output):
    return _input(d, d.get("pull"))


# IRQ to task: the one primitive safe to set from an interrupt handler.
Flag = asyncio.ThreadSafeFlag


def button_pin(d):
    return _input(d, d.get("pull", "up"))


def button_irq(pin, handler):
    pin.irq(handler=handler, trigger=Pin.IRQ_FALLING | Pin.IRQ_RISING)


press = None  # a real button is pressed by a finger; see Button.inject()


async def network_up(cfg):
    """Bring Wi-Fi up (station mode). Returns True once connected."""
    w = cfg.get("wifi")
    if not w:
        return True
    import network

    sta = network.WLAN(network.STA_IF)
    sta.active(True)
    if not sta.isconnected():
        sta.connect(w["ssid"], w.get("password", ""))
        # Wi-Fi association has no event to wait on in MicroPython: check it
        # at a coarse interval while connecting (not an input poll).
        for _ in range(300):
            if sta.isconnected():
                break
            await asyncio.sleep_ms(100)
    return sta.isconnected()
