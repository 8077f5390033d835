# Board selection: the same firmware runs on an ESP32 and on the unix port.
import sys

if sys.platform == "linux" or sys.platform == "darwin":
    import board_unix as impl
else:
    import board_esp32 as impl

SIMULATED = impl.press is not None


def output(bdef):
    o = impl.Output(bdef.get("output", {}))
    o.sense = None
    d = bdef.get("sense")
    if d:
        from sense import Sense

        o.sense = Sense(impl.sense_pin(d, o), bool(d.get("active_low", False)))
        impl.button_irq(o.sense.pin, o.sense.irq)
    return o


def button_pin(bdef):
    b = bdef.get("button")
    return impl.button_pin(b) if b else None


button_irq = impl.button_irq
Flag = impl.Flag
press = impl.press
network_up = impl.network_up
