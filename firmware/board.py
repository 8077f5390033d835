# Board selection: the same firmware runs on an ESP32 and on the unix port.
# The layer is chosen by name, never by elimination: a port that is neither
# (an RP2040, an STM32) gets a clear error instead of the ESP32 layer.
import sys

_LAYERS = {"esp32": "board_esp32", "linux": "board_unix", "darwin": "board_unix"}


def layer_for(platform):
    """The board layer's module name for a sys.platform value."""
    name = _LAYERS.get(platform)
    if name is None:
        raise ImportError("lightctl: no board layer for platform %r (esp32, or the unix port)" % platform)
    return name


if layer_for(sys.platform) == "board_esp32":
    import board_esp32 as impl
else:
    import board_unix as impl

SIMULATED = impl.press is not None


def output(bdef):
    return impl.Output(bdef.get("output", {}))


def sense(bdef, o):
    """The board's sense input watching output o, or None."""
    d = bdef.get("sense")
    if not d:
        return None
    from sense import Sense

    s = Sense(impl.sense_pin(d, o), bool(d.get("active_low", False)), d.get("timeout_ms", 50), impl.Flag)
    impl.button_irq(s.pin, s.irq)
    return s


def button_pin(bdef):
    b = bdef.get("button")
    return impl.button_pin(b) if b else None


button_irq = impl.button_irq
irq_detach = impl.irq_detach
Flag = impl.Flag
press = impl.press
network_up = impl.network_up
watchdog = impl.watchdog
watchdog_park = impl.watchdog_park
console = impl.console
rtc_year = impl.rtc_year
rtc_set = impl.rtc_set
