# Garbage collected between commands, not inside one.
#
# MicroPython collects when an allocation finds no room: inside whatever is
# running then, often a command on its way from the broker to the pin and
# back. Each command allocates some kilobytes (coroutine frames, the decoded
# JSON, the report), and in an ESP32-sized heap the firmware's own code and
# buffers leave only a few commands' worth free: on the Unix port in 80 KiB,
# two command cycles in five paid for a whole collection (0.1-0.2 ms there,
# longer on an ESP32's slower CPU), often before the report went out. Here, once a change has been
# reported on every link, the heap is collected if what is free would not hold
# two more command cycles, or is no more than a level at which one did not fit:
# the collection is paid while the report travels. On a large heap that is
# seldom; in 80 KiB it is after nearly every change.
import gc

from micropython import const

_NEED_MIN = const(2048)  # a command cycle allocates at least this much (a first guess)
_FREED = const(512)  # more free than this since the last change: only a collection frees that much


class Heap:
    def __init__(self, collect=True):
        self.collect = collect  # False (config "gc": "when_full"): only count
        self.between = 0  # collections made here, between commands
        self.forced = 0  # cycles in which MicroPython had to collect by itself
        self.need = _NEED_MIN  # the most one cycle allocated lately
        self.short = 0  # the most free after a change that still proved too little
        self.free = 0  # free after the last change was reported (0: none yet)

    def collected(self):
        # A collection made on purpose elsewhere (info reports the heap after
        # one): the next change compares with what is free now.
        if self.free:
            self.free = gc.mem_free()

    def settle(self):
        # Called once a change has gone out on every link.
        f = gc.mem_free()
        last = self.free
        if last:
            if f > last + _FREED:  # more free than after the last change: a collection came in between
                # The cycle did not fit in what was free then (a heap in
                # fragments holds less than its free total): that much free is
                # too little from now on.
                self.forced += 1
                if last + _FREED > self.short:
                    self.short = last + _FREED
            else:
                # What this cycle allocated; the estimate forgets slowly (a
                # 64th per cycle), so one large cycle (a reconnect's
                # discovery) does not hold it up for good.
                used = last - f
                n = self.need
                self.need = used if used > n else max(_NEED_MIN, n - (n >> 6))
        if self.collect and (f < 2 * self.need or f < self.short):
            gc.collect()
            self.between += 1
            f = gc.mem_free()
        self.free = f
