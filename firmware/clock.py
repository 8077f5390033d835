# Device monotonic clock in microseconds, wrap-safe.
#
# On a board this is time.ticks_us() with its native period (2**30 on an
# ESP32). The unix board may emulate a shorter period and a start value near
# the wrap point, so that wraps happen inside a test run. All differences go
# through diff(), never through plain subtraction.
import time

# The stubs type ticks as opaque values; the period is found by arithmetic on them.
_native_period = time.ticks_add(0, -1) + 1  # pyright: ignore[reportArgumentType, reportOperatorIssue]
PERIOD = _native_period
_mask = PERIOD - 1
_half = PERIOD >> 1
_off = 0

now = time.ticks_us
diff = time.ticks_diff


def _now_emulated():
    return (time.ticks_us() + _off) & _mask  # pyright: ignore[reportOperatorIssue]  # masked to the emulated period


def _diff_emulated(a, b):
    return ((a - b + _half) & _mask) - _half


def emulate(period=None, start=None):
    """Emulate a ticks period (a power of two) and a start value."""
    global PERIOD, _mask, _half, _off, now, diff
    if period is None and start is None:
        return
    period = period or _native_period
    if period & (period - 1) or period > _native_period or period < 1 << 20:
        raise ValueError("ticks period must be a power of two, 2**20..native")
    PERIOD = period
    _mask = period - 1
    _half = period >> 1
    _off = 0
    if start is not None:
        _off = (start - time.ticks_us()) & _mask
    now = _now_emulated
    diff = _diff_emulated


def offset():
    """The emulated offset: device ticks = (native ticks + offset) mod PERIOD."""
    return _off
