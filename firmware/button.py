# Debounced push button. The pin IRQ only records the edge time and sets a
# flag (a ThreadSafeFlag on a board, where the IRQ is a real interrupt; the
# board layer chooses); the task acts on the first edge of a press (leading-edge
# debounce: no waiting before the light changes), then ignores bounces until
# the button has been released and stable for debounce_ms. `armed` is set
# while the task waits for the next press (the debouncer is re-armed), so a
# simulated press can tell the host when the next press would count.
import asyncio

import clock


class Button:
    def __init__(self, pin, active_low, debounce_ms, on_press, irq_attach, flag):
        self.pin = pin
        self.active_low = active_low
        self.debounce_ms = debounce_ms
        self.on_press = on_press
        self.flag = flag()
        self.t_edge = 0
        self.edges = 0
        self.presses = 0
        self._inject = False
        self.armed = asyncio.Event()
        irq_attach(pin, self._irq)

    def _irq(self, pin):
        # Interrupt context on a board: no allocation, no blocking.
        self.t_edge = clock.now()
        self.edges += 1
        self.flag.set()

    def pressed(self):
        return self.pin.value() == (0 if self.active_low else 1)

    def inject(self):
        """A press without a finger (boards without a simulated pin)."""
        self._inject = True
        self.t_edge = clock.now()
        self.flag.set()

    async def run(self):
        armed = self.armed
        while True:
            armed.set()
            await self.flag.wait()
            armed.clear()
            if self._inject:
                self._inject = False
                self.presses += 1
                await self._press()
                continue
            if not self.pressed():
                continue
            self.presses += 1
            await self._press()
            await self._wait_release()

    async def _press(self):
        try:
            await self.on_press(self.t_edge)
        except Exception:
            pass  # on_press reports its own failures; this task must go on

    async def _wait_release(self):
        while True:
            await asyncio.sleep_ms(self.debounce_ms)
            self.flag.clear()
            if not self.pressed():
                return
            await self.flag.wait()

    def deinit(self, detach):
        detach(self.pin)
