# The light controller: wires the board, the light, the button and the links.
import asyncio
import gc
import os
import sys

import board
import clock
import config
import light
from button import Button
from serial_link import SerialLink

VERSION = "0.1.0"


class App:
    VERSION = VERSION

    def __init__(self, cfg):
        self.cfg = cfg
        b = cfg["board"]
        t = b.get("ticks")
        if t:
            clock.emulate(t.get("period"), t.get("start"))
        self.bdef = b
        self.device_id = cfg["device_id"]
        self.light = light.Light(board.output(b))
        self.boot_id = "%02x%02x" % tuple(os.urandom(2))
        self.local_n = 0
        self.store = None
        # Power-on state: "off" (default), "on" or "last"; the pin is set
        # before any link is up.
        restore = cfg.get("restore") or b.get("restore") or "off"
        if restore != "off":
            import persist

            self.store = persist.restore(self, restore)
        self.serial = SerialLink(self)
        self.mqtt = None
        self.links = [self.serial]
        if cfg.get("mqtt"):
            from mqtt_link import MqttLink

            self.mqtt = MqttLink(self, cfg)
            self.links = [self.mqtt, self.serial]  # MQTT first: the user's view
        self.button = None
        self._press_lock = asyncio.Lock()
        bp = board.button_pin(b)
        if bp is not None:
            bd = b["button"]
            self.button = Button(
                bp,
                bool(bd.get("active_low", True)),
                bd.get("debounce_ms", 30),
                self.on_button,
                board.button_irq,
                board.Flag,
            )

    def new_id(self, prefix):
        self.local_n += 1
        return "%s-%s-%d" % (prefix, self.boot_id, self.local_n)

    def mqtt_status(self):
        if not self.mqtt:
            return "disabled"
        return "connected" if self.mqtt.client.connected else "disconnected"

    async def command(self, origin, src, cmd_id, state, bri, t_rx):
        """Apply a validated command and report it, origin first. A command
        id seen before is not applied again: its original event is answered."""
        if cmd_id:
            body = self.light.recall(cmd_id)
            if body:
                body += ',"dup":true'
                if origin is self.mqtt:
                    await origin.report(body, True)  # on .../ack: no rollback of the state
                else:
                    await origin.report(body)
                return
        body = self.light.apply(cmd_id or self.new_id(src), src, state, bri, t_rx, cmd_id is not None)
        if self.store:
            self.store.flag.set()  # written to flash a little later
        try:
            await origin.report(body)
        finally:
            # Even when the origin's report is cut short (a dead link being
            # torn down), the other links still hear of the change.
            for link in self.links:
                if link is not origin:
                    await link.report(body)

    async def on_button(self, t_edge):
        # Local first: the pin is written before any network is touched.
        body = self.light.toggle(self.new_id("button"), t_edge)
        if self.store:
            self.store.flag.set()
        for link in self.links:
            await link.report(body)

    def press(self):
        """A button press requested over the serial link."""
        btn = self.button
        if btn is None:
            return False
        if board.press is not None:
            asyncio.create_task(self._sim_press(btn))
        else:
            btn.inject()
        return True

    async def _sim_press(self, btn):
        # Presses queue up: each is a whole press, hold and release, and the
        # next starts only once the debouncer has re-armed.
        async with self._press_lock:
            await board.press(btn.pin, btn.active_low)
            await asyncio.sleep_ms(btn.debounce_ms + 5)

    def info_json(self, cmd_id, mem_free, mem_alloc):
        return (
            '{"ev":"info","id":"%s","version":"%s","board":"%s","platform":"%s",'
            '"device_id":"%s","base_topic":"%s","ticks_period":%d,"ticks":%d,"mem_free":%d,"mem_alloc":%d,'
            '"mqtt":"%s","simulated":%s}'
            % (
                cmd_id or "",
                VERSION,
                self.bdef.get("name", "?"),
                sys.platform,
                self.device_id,
                self.cfg["base_topic"],
                clock.PERIOD,
                clock.now(),
                mem_free,
                mem_alloc,
                self.mqtt_status(),
                "true" if board.SIMULATED else "false",
            )
        )

    def boot_json(self):
        return '{"ev":"boot","version":"%s","board":"%s","device_id":"%s","ticks_period":%d,"ticks":%d}' % (
            VERSION,
            self.bdef.get("name", "?"),
            self.device_id,
            clock.PERIOD,
            clock.now(),
        )

    async def _mqtt(self):
        while not await board.network_up(self.cfg):
            self.serial.status("wifi", "down")
            await asyncio.sleep(5)
        await self.mqtt.client.run()

    async def run(self):
        self.serial.write(self.boot_json())
        if self.light.last:  # the state restored at power-on
            await self.serial.report(self.light.last)
        tasks = [asyncio.create_task(self.serial.run())]
        if self.store:
            tasks.append(asyncio.create_task(self.store.run(self.light, self.serial.status)))
        if self.button:
            tasks.append(asyncio.create_task(self.button.run()))
        if self.mqtt:
            tasks.append(asyncio.create_task(self._mqtt()))
        await asyncio.gather(*tasks)

    def close(self):
        if self.mqtt:
            self.mqtt.client._close()


def main(path=None):
    try:
        cfg = config.load(path)
    except Exception as e:
        print('{"ev":"fatal","code":"config","msg":"%s: %s"}' % (type(e).__name__, path or config.path()))
        return
    # Collections at boot: garbage goes before the long-lived objects settle,
    # which then pack low in the heap and leave the rest in one piece (the
    # heap is tight at 64k: fragments would make later allocations fail).
    gc.collect()
    a = App(cfg)
    gc.collect()
    try:
        asyncio.run(a.run())
    finally:
        a.close()
        asyncio.new_event_loop()
        # The task that was running when the firmware stopped (Ctrl-C) would
        # keep the whole App alive: let it go, so the REPL gets the RAM back.
        asyncio.core.cur_task = None
