# Optional physical confirmation: an input wired to the light's output (or a
# comparator on a photodiode facing the light). Its IRQ stamps the moment the
# light was seen to change, so a journey can end when the light is really on.
# A photodiode's edge comes later than the pin write: after a write the input
# is waited for, up to the board's timeout_ms ("sense": {"timeout_ms": 50}),
# and reported as missed when it never shows the light as commanded.
import asyncio

import clock


class Sense:
    def __init__(self, pin, active_low, timeout_ms, flag):
        self.pin = pin
        self.active_low = active_low
        self.timeout_ms = timeout_ms
        self.flag = flag()
        self.t = 0
        self.edges = 0

    def irq(self, pin):
        # Interrupt (scheduled) context on a board: no allocation.
        self.t = clock.now()
        self.edges += 1
        self.flag.set()

    def arm(self):
        """Before the output is written: forget earlier edges."""
        self.edges = 0
        self.flag.clear()

    def _shows(self, on):
        return (self.pin.value() == (0 if self.active_low else 1)) == on

    async def seen(self, on, t_pin):
        """Device ticks when the input showed the light as commanded, or 0
        when it did not within timeout_ms. An edge since the output was
        written counts (never before t_pin: a simulated wire answers inside
        the write itself); the level already as commanded counts at once
        (the light was already so)."""
        if not self.edges and self._shows(on):
            return clock.now()
        left = self.timeout_ms
        while True:
            if self.edges and self._shows(on):
                t = self.t
                return t_pin if clock.diff(t, t_pin) < 0 else t
            if left <= 0:
                return 0
            t0 = clock.now()
            try:
                await asyncio.wait_for_ms(self.flag.wait(), left)
            except asyncio.TimeoutError:
                return 0
            self.flag.clear()
            left -= clock.diff(clock.now(), t0) // 1000

    def deinit(self, detach):
        detach(self.pin)
