"""Watch a device's event stream: one readable line per event.

The device's own timestamps (ticks_us) become durations: command received ->
pin written, received -> report handed over, wrap-safe on the ticks period the
device reports (info first, then every boot and info event). Console noise (a
traceback, a banner, the REPL) is printed prefixed and dimmed.
"""

from __future__ import annotations

import json
import queue
import sys
import time
from datetime import datetime
from typing import Any, TextIO

from host_harness.core.events import WaitTimeout
from host_harness.core.ids import IdMaker
from host_harness.core.ticks import ticks_diff
from host_harness.dut import boards
from host_harness.dut.device import Device
from host_harness.image.ports import check_port_exists, port_holders
from host_harness.link.serial_link import SerialLink

DEFAULT_PERIOD = 2**30  # MicroPython's ticks period on most ports
NOISE_PREFIX = "  | "


def duration(us: int) -> str:
    """A device duration in µs, readable: '41 µs', '2.35 ms', '1.20 s'."""
    if abs(us) < 1000:
        return f"{us} µs"
    if abs(us) < 1_000_000:
        return f"{us / 1000:.2f} ms"
    return f"{us / 1e6:.2f} s"


class Formatter:
    """Event dicts to one-line text; knows the device's ticks period."""

    def __init__(self, period: int = DEFAULT_PERIOD) -> None:
        self.period = period

    def _d(self, a: Any, b: Any) -> str | None:
        if isinstance(a, int) and isinstance(b, int):
            return duration(ticks_diff(a, b, self.period))
        return None

    def fields(self, ev: dict[str, Any]) -> list[str]:
        kind = ev.get("ev")
        g = ev.get
        parts: list[str] = []
        if kind == "change" and g("dup"):
            # The device answers a command id it has seen with that command's
            # event again: its times are the original's, so no durations.
            parts = [f"repeat of {g('id')} (seq {g('seq')}, not applied again)", f"src={g('src')}"]
        elif kind == "change":
            parts = [f"#{g('seq')}", f"{g('state')} {g('brightness')}", f"src={g('src')}", f"id={g('id')}"]
            for label, a, b in (("rx→pin", "t_pin", "t_rx"), ("rx→tx", "t_tx", "t_rx")):
                d = self._d(g(a), g(b))
                if d is not None:
                    parts.append(f"{label} {d}")
        elif kind == "pong":
            parts = [f"id={g('id')}"]
            d = self._d(g("ticks"), g("t_rx"))
            if d is not None:
                parts.append(f"rx→reply {d}")
        elif kind == "state":
            parts = [f"{g('state')} {g('brightness')}", f"seq={g('seq')}", f"pin={g('pin')}", f"mqtt={g('mqtt')}"]
        elif kind in ("info", "boot"):
            if isinstance(g("ticks_period"), int) and g("ticks_period") > 0:
                self.period = int(g("ticks_period"))
            parts = [
                f"device={g('device_id')}",
                f"board={g('board')}",
                f"firmware={g('version')}",
                f"ticks period={period_text(self.period)}",
            ]
            if kind == "info":
                parts += [f"platform={g('platform')}", f"mqtt={g('mqtt')}", f"mem_free={g('mem_free')}"]
        elif kind == "ack" and g("op") == "press":
            parts = [f"press queued  id={g('id')}"]
        elif kind == "error":
            parts = [f"{g('code')}: {g('msg')}"] + ([f"id={g('id')}"] if g("id") else [])
        elif kind in ("mqtt", "wifi", "persist"):
            parts = [str(g("status"))] + ([str(g("detail"))] if g("detail") else [])
        else:
            parts = [f"{k}={v}" for k, v in ev.items() if k != "ev"]
        return parts

    def line(self, host_ns: int, ev: dict[str, Any], raw: bool = False) -> str:
        body = json.dumps(ev, separators=(",", ":")) if raw else "  ".join(self.fields(ev))
        return f"{wall(host_ns)}  {ev.get('ev', '?'):<7} {body}"


def period_text(p: int) -> str:
    return f"2**{p.bit_length() - 1}" if p > 0 and p & (p - 1) == 0 else str(p)


def wall(host_ns: int) -> str:
    """Wall-clock time of a host monotonic stamp, HH:MM:SS.mmm."""
    t = time.time() - (time.monotonic_ns() - host_ns) / 1e9
    return datetime.fromtimestamp(t).strftime("%H:%M:%S.%f")[:-3]


def monitor(
    port: str,
    board: str | None = None,
    count: int | None = None,
    seconds: float | None = None,
    info_timeout: float = 3.0,
    raw: bool = False,
    color: bool = False,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    """Print events until ``count`` events, ``seconds`` or Ctrl-C. Returns the number of events printed."""
    check_port_exists(port)
    for pid, cmd in port_holders(port):
        print(
            f"note: {port} is also open in pid {pid} ({cmd}); if it reads too, each sees only part of the output",
            file=err,
        )
    bdef = boards.load(board) if board else {}
    lines: queue.Queue[tuple[int, str, dict[str, Any] | None]] = queue.Queue()
    link = SerialLink(port, name="monitor")
    link.line_listeners.append(lambda now, noise, ev: lines.put((now, noise, ev)))
    fmt = Formatter()
    dev = Device(link, bdef)
    dev.ids = IdMaker("mon")
    mine = dev.ids.prefix
    printed = 0
    dim, undim = ("\x1b[2m", "\x1b[0m") if color else ("", "")

    def emit(s: str) -> None:
        # One write per line: a Ctrl-C between print()'s text and its newline
        # would glue the stop message onto a half-printed line.
        out.write(s + "\n")
        out.flush()

    try:
        try:
            info = dev.wait_boot(info_timeout)
            fmt.period = int(info.get("ticks_period") or DEFAULT_PERIOD)
            head = (
                f"device {info.get('device_id')} ({info.get('platform')}), board {info.get('board')}, "
                f"firmware {info.get('version')}, mqtt {info.get('mqtt')}"
            )
        except WaitTimeout:
            head = f"the device did not answer info within {info_timeout:g} s (firmware not running?)"
        emit(
            f"monitor {port}{' (board ' + bdef['name'] + ')' if bdef else ''}: {head}; "
            f"ticks period {period_text(fmt.period)}; Ctrl-C to stop"
        )
        end = time.monotonic() + seconds if seconds is not None else None
        while count is None or printed < count:
            left = None if end is None else end - time.monotonic()
            if left is not None and left <= 0:
                break
            try:
                host_ns, noise, ev = lines.get(timeout=0.2 if left is None else min(0.2, left))
            except queue.Empty:
                if link.log.closed_reason:
                    emit(f"monitor: {link.log.closed_reason}")
                    return printed
                continue
            if noise.strip():
                emit(f"{dim}{wall(host_ns)}{NOISE_PREFIX}{noise}{undim}")
            if ev is None:
                continue
            if ev.get("ev") == "info" and str(ev.get("id", "")).startswith(mine):
                fmt.fields(ev)  # our own info request: only its ticks period matters
                continue
            emit(fmt.line(host_ns, ev, raw))
            printed += 1
    except KeyboardInterrupt:
        emit(f"monitor: stopped after {printed} events")
        return printed
    finally:
        link.close()
    return printed


def run(args: Any) -> int:
    color = args.color == "always" or (args.color == "auto" and sys.stdout.isatty())
    monitor(
        args.device,
        args.board,
        count=args.count,
        seconds=args.seconds,
        info_timeout=args.info_timeout,
        raw=args.raw,
        color=color,
    )
    return 0
