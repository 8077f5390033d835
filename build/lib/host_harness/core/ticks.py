"""Device ticks: differences modulo the period, and unwrapping into a monotonic count."""

from __future__ import annotations


def ticks_diff(a: int, b: int, period: int) -> int:
    """a - b on a ticks clock of the given period, as MicroPython computes it."""
    half = period // 2
    return ((a - b + half) % period) - half


def ticks_diff_f(a: float, b: float, period: int) -> float:
    """a - b reduced to -period/2 .. period/2 (floats allowed; exact for small differences on huge periods)."""
    d = a - b
    return d - period * round(d / period)


def nearest_unwrap(raw: int, target: float, period: int) -> int:
    """The value ``raw + k*period`` (any integer k) nearest to ``target``."""
    return raw + period * round((target - raw) / period)


class Unwrapper:
    """Turns raw device ticks (modulo ``period``) into a monotonic count.

    Feed values in roughly increasing time order: each one is placed within
    half a period of the previous one, so a value up to half a period
    *behind* the last is jitter (reported as a smaller value), not a wrap.
    The first value is returned as is. ``expected`` overrides the previous
    value as the anchor, e.g. after a gap longer than half a period when the
    elapsed time is known from another clock.
    """

    def __init__(self, period: int) -> None:
        if period < 2:
            raise ValueError(f"ticks period must be at least 2, got {period}")
        self.period = period
        self.first: int | None = None
        self.last: int | None = None
        self.highest: int | None = None

    @property
    def wraps(self) -> int:
        """Wraps between the first value fed and the highest one since."""
        if self.first is None or self.highest is None:
            return 0
        return self.highest // self.period - self.first // self.period

    def feed(self, raw: int, expected: float | None = None) -> int:
        if not 0 <= raw < self.period:
            raise ValueError(f"raw ticks {raw} outside 0..{self.period - 1}")
        if expected is not None:
            value = nearest_unwrap(raw, expected, self.period)
        elif self.last is None:
            value = raw
        else:
            value = self.last + ticks_diff(raw, self.last % self.period, self.period)
        if self.first is None:
            self.first = value
        self.highest = value if self.highest is None else max(self.highest, value)
        self.last = value
        return value
