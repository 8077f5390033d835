# The light controller: wires the board, the light, the button and the links.
import asyncio
import gc
import json
import os
import sys
import time

from micropython import const

import board
import clock
import config
import light
from button import Button
from serial_link import SerialLink

VERSION = "0.1.0"
_PRESSES = const(64)  # simulated presses queued at most (a count: no RAM per press); more: busy
_RESTART_MS = const(500)  # a failed task's first restart delay; doubled per failure
_RESTART_MAX_MS = const(30000)
_HEALTHY_MS = const(60000)  # a task that ran this long before failing starts again at _RESTART_MS
_GC_NEED = const(2048)  # a cycle between changes allocates at least this much (a first guess)
_GC_FREED = const(512)  # more free than this since the last change: only a collection frees that much


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
        o = board.output(b)
        self.light = light.Light(o, board.sense(b, o))
        self.boot_id = "%02x%02x" % tuple(os.urandom(2))
        self.local_n = 0
        self.gc_on = cfg.get("gc") != "when_full"  # else only counted (see settle)
        self.gc_between = 0  # collections made by settle
        self.gc_forced = 0  # changes in whose cycle MicroPython had to collect by itself
        self.gc_need = _GC_NEED  # the most one cycle between changes allocated, or did not fit in
        self.gc_free = 0  # free after the last change (0: not known)
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
        self.wdt = None
        self.presses = 0  # simulated presses queued, the one under way included
        self._press_ev = asyncio.Event()
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
                    await origin.report(body, True, True)  # on .../ack: no rollback of the state
                else:
                    await origin.report(body)
                return
        body = self.light.apply(cmd_id or self.new_id(src), src, state, bri, t_rx, cmd_id is not None)
        if self.light.sense:  # (no coroutine made without one)
            body = await self._sensed(body)
        if self.store:
            self.store.flag.set()  # written to flash a little later
        await self._tell(body, origin)

    async def _sensed(self, body):
        # With a sense input, the report waits for the light to show (up to
        # the board's timeout_ms): t_sense, or "sense":"missed".
        light = self.light
        s = light.sense
        if s is None:
            return body
        return light.sensed(body, await s.seen(light.on, light.t_pin))

    async def _tell(self, body, origin):
        # Every link hears of the change, origin first, each report written at
        # once (synchronously): the console shows changes in sequence order,
        # whatever the network does. Only then is the MQTT stream drained.
        m = self.mqtt
        s = self.serial
        if origin is s:
            s.write('{"ev":"change",%s,"t_tx":%d}\n' % (body, clock.now()))
        p = m.post(body, False, origin is m) if m else None
        if origin is not s:
            s.write('{"ev":"change",%s,"t_tx":%d}\n' % (body, clock.now()))
        if m:
            await m.flush(p)
        self.settle()  # the change is out: collect now, not inside the next one

    def settle(self):
        # Garbage is collected between commands, not inside one. MicroPython
        # collects when an allocation finds no room: inside whatever runs
        # then, often a command on its way to the pin and back. A cycle from
        # one change to the next allocates some kilobytes (a coroutine frame
        # per await, the decoded command, the reports), and in an ESP32-sized
        # heap only a few cycles' worth is free, so 2 cycles in 5 paid for a
        # collection (0.1-0.2 ms on the Unix port, longer on an ESP32), often
        # before the report went out. Once a change is out, the heap is
        # collected if what is free would not hold two of the largest cycles
        # seen: on a large heap seldom, in 80 KiB after nearly every change.
        f = gc.mem_free()
        last = self.gc_free
        if last:
            if f > last + _GC_FREED:
                # More free than after the last change: a collection came in
                # between. The cycle did not fit in what was free (a heap in
                # fragments holds less than its free total): ask for more.
                self.gc_forced += 1
                if last + _GC_FREED > self.gc_need:
                    self.gc_need = last + _GC_FREED
            elif last - f > self.gc_need:
                self.gc_need = last - f
        if self.gc_on and f < 2 * self.gc_need:
            gc.collect()
            self.gc_between += 1
            f = gc.mem_free()
        self.gc_free = f

    async def on_button(self, t_edge):
        try:
            # Local first: the pin is written before any network is touched.
            body = await self._sensed(self.light.toggle(self.new_id("button"), t_edge))
            if self.store:
                self.store.flag.set()
            await self._tell(body, None)
        except Exception as e:  # incl. MemoryError: the button keeps working
            gc.collect()
            self.fault("internal", type(e).__name__, "button")

    def press(self):
        """A button press requested over the serial link: True, or False
        without a button, or None when too many presses are queued."""
        btn = self.button
        if btn is None:
            return False
        if board.press is None:
            btn.inject()
        elif self.presses < _PRESSES:
            self.presses += 1
            self._press_ev.set()
        else:
            return None
        return True

    async def _press_run(self, btn):
        # One task drives the queued presses, one after another: each is a
        # whole press, hold and release, and the next starts only once the
        # debouncer has re-armed, which the console is told ("released", with
        # the button's count of presses): the host waits for it, not a guess.
        ev = self._press_ev
        while True:
            await ev.wait()
            ev.clear()
            while self.presses:
                try:
                    btn.armed.clear()  # set again once the button task has seen this press through
                    # started only when the board layer has press()
                    await board.press(btn.pin, btn.active_low)  # pyright: ignore[reportOptionalCall]
                    await btn.armed.wait()
                    self.serial.write('{"ev":"released","presses":%d}' % btn.presses)
                except Exception as e:
                    gc.collect()
                    self.fault("internal", type(e).__name__, "button")
                self.presses -= 1

    def fault(self, code, msg, src, extra=""):
        """An error of the device's own (no command caused it): one console
        line with its src, so the host never takes it for a reply."""
        self.serial.write('{"ev":"error","code":"%s","msg":%s,"src":"%s"%s}' % (code, json.dumps(msg), src, extra))

    def info_json(self, cmd_id, mem_free, mem_alloc):
        return (
            '{"ev":"info","id":"%s","version":"%s","board":"%s","platform":"%s",'
            '"device_id":"%s","base_topic":"%s","ticks_period":%d,"ticks":%d,"mem_free":%d,"mem_alloc":%d,'
            '"mqtt":"%s","simulated":%s,"rx_window":%d,"rx_dropped":%s,"fw":"%s","wifi_pm":"%s"}'
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
                self.serial.console.window,
                _count(getattr(self.serial.console, "dropped", None)),
                self.cfg.get("fw", ""),
                config.wifi_pm(self.cfg),
            )
        )

    def boot_json(self):
        return '{"ev":"boot","version":"%s","board":"%s","device_id":"%s","ticks_period":%d,"ticks":%d,"rx_window":%d}' % (
            VERSION,
            self.bdef.get("name", "?"),
            self.device_id,
            clock.PERIOD,
            clock.now(),
            self.serial.console.window,
        )

    async def _mqtt(self):
        while not await board.network_up(self.cfg):
            self.serial.status("wifi", "down")
            await asyncio.sleep(5)
        if self.cfg["mqtt"].get("tls"):
            # Certificates are checked against the RTC, which reads 2000-01-01
            # after power-on: the time is set before the first TLS connect.
            import timesync

            await timesync.ensure(self)
        c = self.mqtt.client  # pyright: ignore[reportOptionalMemberAccess]  # started only with an MQTT link
        try:
            await c.run()
        finally:
            c.close()  # a restart after a failure starts from a closed link

    async def _supervise(self, name, job):
        """Run job() (a coroutine function) for good: a failure is reported
        and the job started again after a backoff, and no other task is
        touched. Ctrl-C (KeyboardInterrupt) is no failure: it stops all."""
        delay = _RESTART_MS
        while True:
            t0 = time.ticks_ms()
            try:
                await job()
                return
            except Exception as e:
                gc.collect()
                if time.ticks_diff(time.ticks_ms(), t0) >= _HEALTHY_MS:
                    delay = _RESTART_MS
                self.fault("task_failed", "%s: %s" % (type(e).__name__, e), "task", ',"task":"%s","restart_ms":%d' % (name, delay))
            await asyncio.sleep_ms(delay)
            delay = min(delay * 2, _RESTART_MAX_MS)

    async def _feed(self, wdt):
        # Fed by the loop itself: a loop stuck for the watchdog's timeout
        # (a blocking call, a task that never yields) resets the board.
        ms = self.bdef.get("wdt_ms", 10000) // 4 or 1
        while True:
            wdt.feed()
            await asyncio.sleep_ms(ms)

    async def run(self):
        self.serial.write(self.boot_json())
        if self.light.last:  # the state restored at power-on
            await self.serial.report(self.light.last)
        sv = self._supervise
        jobs = [sv("serial", self.serial.run)]
        if self.store:
            store = self.store
            jobs.append(sv("store", lambda: store.run(self.light, self.serial.status)))
        if self.button:
            jobs.append(sv("button", self.button.run))
            if board.press is not None:
                jobs.append(sv("press", lambda: self._press_run(self.button)))
        if self.mqtt:
            jobs.append(sv("mqtt", self._mqtt))
        self.wdt = board.watchdog(self.bdef)
        if self.wdt:
            jobs.append(self._feed(self.wdt))
        await asyncio.gather(*[asyncio.create_task(j) for j in jobs])

    def close(self):
        # Detach every IRQ: a handler left attached would keep the App
        # alive and run on every edge while the REPL has the board.
        if self.button:
            self.button.deinit(board.irq_detach)
        s = self.light.sense
        if s:
            s.deinit(board.irq_detach)
        if self.mqtt:
            self.mqtt.client.close()
        if self.wdt:
            board.watchdog_park(self.wdt)


def _count(n):
    # A count the board knows, or null: a board's UART driver does not count
    # the console bytes it drops (the emulated console does).
    return "null" if n is None else str(n)


def main(path=None):
    try:
        cfg = config.load(path)
    except Exception as e:
        print('{"ev":"fatal","code":"config","msg":%s}' % json.dumps("%s: %s: %s" % (type(e).__name__, e, path or config.path())))
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
        asyncio.core.cur_task = None  # pyright: ignore[reportAttributeAccessIssue]  # asyncio internals: not in the stubs
