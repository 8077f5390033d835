"""Load schedules: closed loop and open loop at a fixed rate.

Closed loop sends the next command after the previous confirmation. Open
loop sends on a fixed schedule whatever happens, and times each journey
from its *intended* start, so a stall delays every command queued behind it
and shows in the percentiles instead of being hidden (coordinated omission,
as wrk2 corrects it).
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Callable

from host_harness.core.events import WaitTimeout
from host_harness.core.hops import ClockMap
from host_harness.core.journey import Journey, journey_from_event, set_command
from host_harness.core.results import JourneyRun
from host_harness.dut.device import CommandError
from host_harness.measure import pace
from host_harness.measure.journeys import Journeys
from host_harness.measure.progress import Progress

Tick = Callable[[Journey | None], None]


def command_for(i: int, rng: random.Random) -> tuple[str | None, int | None]:
    """Alternating on/off and brightness changes."""
    step = i % 4
    if step == 0:
        return "ON", None
    if step == 1:
        return None, rng.randint(1, 255)
    if step == 2:
        return "OFF", None
    return "ON", rng.randint(1, 255)


def closed_loop(
    js: Journeys,
    kind: str,
    count: int,
    clock: ClockMap,
    *,
    seed: int = 1,
    progress: Progress | None = None,
    into: JourneyRun | None = None,
) -> JourneyRun:
    """``into``: the run to fill (the caller keeps what was measured if the loop is interrupted)."""
    run = into if into is not None else JourneyRun(kind, "closed")
    rng = random.Random(seed)
    for i in range(count):
        st, br = command_for(i, rng)
        try:
            if kind == "mqtt":
                j = js.via_mqtt(st, br)
            elif kind == "serial":
                j = js.via_serial(st, br)
            elif kind == "button":
                j = js.button()
            else:
                raise ValueError(f"unknown journey kind {kind!r}")
            run.add(j, clock)
            if progress:
                progress.update(1, f"last {j.e2e_ms:.2f} ms")
        except WaitTimeout as e:
            run.lost.append(str(e))
            if progress:
                progress.update(1, "LOST")
        except CommandError as e:
            run.errors.append(str(e))
            if progress:
                progress.update(1, "ERROR")
    return run


def open_loop_mqtt(
    js: Journeys,
    rate: float,
    count: int,
    clock: ClockMap,
    *,
    seed: int = 1,
    progress: Progress | None = None,
    settle_s: float | None = None,
    into: JourneyRun | None = None,
) -> JourneyRun:
    """MQTT commands at ``rate`` per second, confirmations matched by id (``into``: see closed_loop)."""
    if rate <= 0:
        raise ValueError("rate must be > 0")
    mq = js._need_mqtt()
    rng = random.Random(seed)
    run = into if into is not None else JourneyRun("mqtt", f"open@{rate:g}/s")
    state_t, set_t = js.topic("state"), js.topic("set")
    since, marks = mq.log.cursor, js.tap_marks()
    sent: dict[str, tuple[int, int]] = {}
    order: list[str] = []
    interval = 1e9 / rate
    pacer = pace.Pacer(interval)
    t0 = time.monotonic_ns() + 20_000_000
    for i in range(count):
        cid = js.device.ids()
        st, br = command_for(i, rng)
        payload = json.dumps(set_command(st, br, cid))
        t_int = t0 + int(i * interval)
        pacer.until(t_int)
        sent[cid] = (t_int, mq.publish(set_t, payload))
        order.append(cid)
        if progress:
            progress.update(1, "sending")
    run.sender = pacer.describe()
    # Collect confirmations: every id once; late ones until the settle time.
    missing = set(order)
    deadline = time.monotonic() + (settle_s if settle_s is not None else max(js.timeout, 2.0))
    cursor = since
    while missing:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            ev = mq.log.wait_for(
                lambda e: e.topic == state_t and e.get("id") in missing,
                left,
                f"confirmations of {len(missing)} commands on {state_t}",
                cursor,
            )
        except WaitTimeout:
            break
        cursor = ev.index
        cid = str(ev.get("id"))
        missing.discard(cid)
        t_int, t_send = sent[cid]
        j = journey_from_event("mqtt", cid, t_send, ev, js.period)
        j.t_intended_ns = t_int
        run.add(js.tapped(j, marks), clock)
    seen = Counter(str(e.get("id")) for e in mq.log.events(since) if e.topic == state_t and e.get("id") in sent)
    run.duplicated = sorted(cid for cid, n in seen.items() if n > 1)
    run.lost = [cid for cid in order if cid in missing]
    run.journeys.sort(key=lambda j: j.t_send_ns)
    run.hop_times.sort(key=lambda h: h.journey.t_send_ns)
    return run
