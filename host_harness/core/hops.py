"""Split a journey into hops on the host's clock.

    host send --host_to_device--> device receive --device_apply--> pin written
      [--device_sense--> light sensed, on boards with a sense input]
      --device_report--> report handed to transport --device_to_host--> host receive

Device timestamps are mapped onto the host clock by a clock model (see
core.clockmodel, fed by measure.clocksync); the hops then sum to the end-to-end time exactly. An open-loop
run adds ``host_queue``: from the command's intended start to its send, so a
stalled sender is not hidden (coordinated omission).

With taps (measure.taps: a client on the host clock subscribed to the command
and state topics at a broker), the network hops are split at each tapped
broker: ``host_to_broker``, ``broker_to_device``, ``device_to_broker``,
``broker_to_host``; on a bridged path (a "cloud" broker the host uses, a
"local" one the device uses) ``host_to_cloud``, ``cloud_to_local``,
``local_to_device`` and back. A tap's time is when the broker delivered the
message *to the tap*: it includes that delivery, which the taps measure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from host_harness.core.journey import Journey

# Broker names a tapped path may use, from the host's side: one broker, or a bridge.
TAPPED_BROKERS = ("broker", "cloud", "local")

HOPS: tuple[str, ...] = (
    "host_queue",
    "host_to_device",
    "host_to_broker",
    "broker_to_device",
    "host_to_cloud",
    "cloud_to_local",
    "local_to_device",
    "device_apply",
    "device_sense",
    "device_report",
    "device_to_host",
    "device_to_broker",
    "broker_to_host",
    "device_to_local",
    "local_to_cloud",
    "cloud_to_host",
)

# The hops of a journey without taps.
UNTAPPED_HOPS = ("host_queue", "host_to_device", "device_apply", "device_sense", "device_report", "device_to_host")

LABELS = {
    "host_queue": "host: intended start -> sent",
    "host_to_device": "host sent -> device received",
    "device_apply": "device: received -> pin written",
    "device_sense": "device: pin written -> light sensed",
    "device_report": "device: pin written -> report handed over",
    "device_to_host": "device report -> host received",
    "host_to_broker": "host sent -> broker forwarded (tap)",
    "broker_to_device": "broker forwarded -> device received",
    "device_to_broker": "device report -> broker forwarded (tap)",
    "broker_to_host": "broker forwarded -> host received",
    "host_to_cloud": "host sent -> cloud broker forwarded (tap)",
    "cloud_to_local": "cloud broker -> local broker forwarded (bridge)",
    "local_to_device": "local broker forwarded -> device received",
    "device_to_local": "device report -> local broker forwarded (tap)",
    "local_to_cloud": "local broker -> cloud broker forwarded (bridge)",
    "cloud_to_host": "cloud broker forwarded -> host received",
}

# What each hop contains, per transport: where to look when it is slow.
CONTAINS = {
    "mqtt": {
        "host_to_device": "host client, broker, device's TCP/Wi-Fi and MQTT reader",
        "device_to_host": "device's TCP/Wi-Fi, broker, host client",
    },
    "serial": {
        "host_to_device": "serial line and device console reader",
        "device_to_host": "serial line and host reader",
    },
    "button": {
        "host_to_device": "serial press command and simulated button + debounce",
        "device_to_host": "device's TCP/Wi-Fi, broker, host client",
    },
}

# The same on every transport.
CONTAINS_ALL = {
    "host_to_broker": "host client, host TCP, broker's reading and routing (and the tap's delivery)",
    "host_to_cloud": "host client, host TCP, cloud broker's reading and routing (and the tap's delivery)",
    "broker_to_device": "broker's sending (Nagle), device's TCP/Wi-Fi and MQTT reader (less the tap's delivery)",
    "local_to_device": "local broker's sending (Nagle), device's TCP/Wi-Fi and MQTT reader (less the tap's delivery)",
    "cloud_to_local": "the bridge: cloud broker's sending, the bridge link, local broker's routing",
    "device_to_broker": "device's TCP/Wi-Fi, broker's reading and routing (and the tap's delivery)",
    "device_to_local": "device's TCP/Wi-Fi, local broker's reading and routing (and the tap's delivery)",
    "local_to_cloud": "the bridge: local broker's sending, the bridge link, cloud broker's routing",
    "broker_to_host": "broker's sending to the host client, host TCP and client (less the tap's delivery)",
    "cloud_to_host": "cloud broker's sending to the host client, host TCP and client (less the tap's delivery)",
    "host_queue": "the host's sender: a stalled scheduler or a busy host, not the device",
    "device_apply": "firmware: command parsing, the charge-once check and the pin/PWM write",
    "device_sense": "the light itself: driver, lamp and the sense input's edge",
    "device_report": "firmware: building the state report and handing it to the transport",
}


# The tapped hops an unsplit network hop is made of, so a limit on it still holds in a tapped run.
SPLIT_INTO = {
    "host_to_device": ("host_to_broker", "broker_to_device", "host_to_cloud", "cloud_to_local", "local_to_device"),
    "device_to_host": ("device_to_broker", "broker_to_host", "device_to_local", "local_to_cloud", "cloud_to_host"),
}


def hop_ms(hops: dict[str, float], name: str) -> float | None:
    """A journey's time in hop ``name``: an unsplit network hop is the sum of its tapped parts; None if absent."""
    if name in hops:
        return hops[name]
    parts = [hops[h] for h in SPLIT_INTO.get(name, ()) if h in hops]
    return sum(parts) if parts else None


def covers(kind: str, hop: str) -> str:
    """What a hop of a ``kind`` journey contains: where to look when it is slow."""
    return CONTAINS.get(kind, {}).get(hop) or CONTAINS_ALL.get(hop, "")


class ClockMap(Protocol):
    def device_to_host_ns(self, ticks: int, near_host_ns: int | None = None) -> int: ...


@dataclass
class HopTimes:
    journey: Journey
    hops: dict[str, float]  # ms

    @property
    def total_ms(self) -> float:
        return sum(self.hops.values())


def tapped_hop(a: str, b: str) -> str:
    """The hop from ``a`` to ``b`` (host, device or a tapped broker's name), one of LABELS."""
    name = f"{a}_to_{b}"
    if name not in LABELS:
        raise ValueError(f"no hop {name!r}: tapped brokers are named {', '.join(TAPPED_BROKERS)}")
    return name


def _chain(start: str, t0: int, stops: list[tuple[str, int | None]], end: str, t1: int) -> dict[str, float] | None:
    """Hops from ``start`` at t0 through each stop to ``end`` at t1 (ms); None if a stop has no time."""
    if not stops or any(t is None for _, t in stops):
        return None
    out: dict[str, float] = {}
    here, t = start, t0
    for name, at in stops:
        assert at is not None
        out[tapped_hop(here, name)] = (at - t) / 1e6
        here, t = name, at
    out[tapped_hop(here, end)] = (t1 - t) / 1e6
    return out


def split(j: Journey, clock: ClockMap) -> HopTimes:
    near = j.t_confirm_ns  # device stamps are placed at the wrap count nearest the journey
    rx = clock.device_to_host_ns(j.dev_t_rx, near)
    pin = clock.device_to_host_ns(j.dev_t_pin, near)
    tx = clock.device_to_host_ns(j.dev_t_tx, near)
    # A board with a sense input confirms the light itself: the report hop then starts there.
    sensed = pin if j.dev_t_sense is None else clock.device_to_host_ns(j.dev_t_sense, near)
    start = j.t_intended_ns if j.t_intended_ns is not None else j.t_send_ns
    # Tapped brokers split the network hops: the command passes them host side first, the state device side first.
    taps = j.taps or {}
    down = _chain("host", j.t_send_ns, [(b, t[0]) for b, t in taps.items()], "device", rx)
    up = _chain("device", tx, [(b, t[1]) for b, t in reversed(taps.items())], "host", j.t_confirm_ns)
    return HopTimes(
        j,
        {
            "host_queue": (j.t_send_ns - start) / 1e6,
            **(down or {"host_to_device": (rx - j.t_send_ns) / 1e6}),
            "device_apply": (pin - rx) / 1e6,
            "device_sense": (sensed - pin) / 1e6,
            "device_report": (tx - sensed) / 1e6,
            **(up or {"device_to_host": (j.t_confirm_ns - tx) / 1e6}),
        },
    )
