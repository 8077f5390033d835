"""Split a journey into hops on the host's clock.

    host send --host_to_device--> device receive --device_apply--> pin written
      [--device_sense--> light sensed, on boards with a sense input]
      --device_report--> report handed to transport --device_to_host--> host receive

Device timestamps are mapped onto the host clock by a clock model (see
core.clockmodel, fed by measure.clocksync); the hops then sum to the end-to-end time exactly. An open-loop
run adds ``host_queue``: from the command's intended start to its send, so a
stalled sender is not hidden (coordinated omission).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from host_harness.core.journey import Journey

HOPS: tuple[str, ...] = (
    "host_queue",
    "host_to_device",
    "device_apply",
    "device_sense",
    "device_report",
    "device_to_host",
)

LABELS = {
    "host_queue": "host: intended start -> sent",
    "host_to_device": "host sent -> device received",
    "device_apply": "device: received -> pin written",
    "device_sense": "device: pin written -> light sensed",
    "device_report": "device: pin written -> report handed over",
    "device_to_host": "device report -> host received",
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
    "host_queue": "the host's sender: a stalled scheduler or a busy host, not the device",
    "device_apply": "firmware: command parsing, the charge-once check and the pin/PWM write",
    "device_sense": "the light itself: driver, lamp and the sense input's edge",
    "device_report": "firmware: building the state report and handing it to the transport",
}


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


def split(j: Journey, clock: ClockMap) -> HopTimes:
    near = j.t_confirm_ns  # device stamps are placed at the wrap count nearest the journey
    rx = clock.device_to_host_ns(j.dev_t_rx, near)
    pin = clock.device_to_host_ns(j.dev_t_pin, near)
    tx = clock.device_to_host_ns(j.dev_t_tx, near)
    # A board with a sense input confirms the light itself: the report hop then starts there.
    sensed = pin if j.dev_t_sense is None else clock.device_to_host_ns(j.dev_t_sense, near)
    start = j.t_intended_ns if j.t_intended_ns is not None else j.t_send_ns
    return HopTimes(
        j,
        {
            "host_queue": (j.t_send_ns - start) / 1e6,
            "host_to_device": (rx - j.t_send_ns) / 1e6,
            "device_apply": (pin - rx) / 1e6,
            "device_sense": (sensed - pin) / 1e6,
            "device_report": (tx - sensed) / 1e6,
            "device_to_host": (j.t_confirm_ns - tx) / 1e6,
        },
    )
