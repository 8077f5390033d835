# Optional physical confirmation: an input wired to the light's output (or a
# comparator on a photodiode facing the light). Its IRQ stamps the moment the
# light was seen to change, so a journey can end when the light is really on.
import clock


class Sense:
    def __init__(self, pin, active_low):
        self.pin = pin
        self.active_low = active_low
        self.t = 0
        self.edges = 0

    def irq(self, pin):
        # Interrupt context on a board: no allocation.
        self.t = clock.now()
        self.edges += 1

    def seen(self, on, t_pin):
        """Device ticks when the input showed the light as commanded, or 0.

        An edge since the output was written counts (never before t_pin: a
        simulated wire answers inside the write itself); otherwise the level
        is read now."""
        if self.edges:
            t = self.t
            return t_pin if clock.diff(t, t_pin) < 0 else t
        if (self.pin.value() == (0 if self.active_low else 1)) == on:
            return clock.now()
        return 0
