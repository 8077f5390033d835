# The light's state on flash, to restore it after a reboot (board or config
# option "restore": "off" | "on" | "last"). Not written on every change, to
# spare the flash: at most once per delay_ms, some delay_ms after a change,
# only when the state differs from the file, and atomically (a temporary file
# renamed over the old one), so a power cut never leaves half a file. Each
# check of the timer is told on the console: {"ev":"persist","status":"saved"}
# or "unchanged" (or "failed"), "detail" the file.
import asyncio
import json
import os

import clock


def restore(app, mode):
    """Set the light as it was (mode "last") or on (mode "on", at the saved
    brightness) and return the Store that keeps the file up to date. The
    restored state is an event of its own (src "restore", seq 1)."""
    c = app.cfg
    store = Store(c.get("state_file") or "state.json", c.get("state_delay_ms", 5000))
    saved = store.load()
    if saved or mode == "on":
        on, bri = saved or (True, 255)
        app.light.apply(app.new_id("restore"), "restore", on or mode == "on", bri, clock.now())
    return store


class Store:
    def __init__(self, path="state.json", delay_ms=5000):
        self.path = path
        self.delay_ms = delay_ms
        self.saved = None  # (on, brightness) as on flash
        self.flag = asyncio.Event()  # set on every change

    def load(self):
        """(on, brightness) from the file, or None when absent or unreadable.
        The temporary file counts when the file itself is gone: a power cut
        between the two steps of a rename that cannot replace a file."""
        for p in (self.path, self.path + ".tmp"):
            try:
                with open(p) as f:
                    d = json.load(f)
                on = d["state"]
                b = d["brightness"]
                if on in ("ON", "OFF") and isinstance(b, int) and 0 < b < 256:
                    self.saved = (on == "ON", b)
                    break
            except Exception:
                pass
        return self.saved

    def _write(self, s):
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.write('{"state":"%s","brightness":%d}' % ("ON" if s[0] else "OFF", s[1]))
        try:
            os.rename(tmp, self.path)
        except OSError:  # a filesystem that will not rename over a file
            os.remove(self.path)
            os.rename(tmp, self.path)
        self.saved = s

    async def run(self, light, report):
        while True:
            await self.flag.wait()
            await asyncio.sleep_ms(self.delay_ms)
            self.flag.clear()
            s = (light.on, light.brightness)
            if s == self.saved:
                # The timer's check, told like a write: the host knows by it
                # that nothing was written, without waiting out a guess.
                report("persist", "unchanged", self.path)
                continue
            try:
                self._write(s)
                report("persist", "saved", self.path)
            except OSError as e:
                report("persist", "failed", "%s: %s" % (self.path, e))
