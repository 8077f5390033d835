"""The light journey model: a command sent, the light applied, the state confirmed.

A journey is timed on the host clock from the moment the command is handed
to its transport until the confirmation carrying exactly that command's id
arrives back. The device's own timestamps (receipt, pin write, report handed
to the transport) come along in the confirmation.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from host_harness.core.events import Event
from host_harness.core.ticks import ticks_diff


@dataclass
class Journey:
    kind: str  # "mqtt", "serial" or "button"
    id: str
    seq: int
    state: str
    brightness: int
    src: str
    t_send_ns: int  # host monotonic ns: command handed to the transport
    t_confirm_ns: int  # host monotonic ns: confirmation received
    dev_t_rx: int  # device ticks_us: command received / button edge seen
    dev_t_pin: int  # device ticks_us: output pin written
    dev_t_tx: int  # device ticks_us: report handed to the transport
    ticks_period: int
    t_intended_ns: int | None = None  # open loop: when the schedule meant to send it
    dev_t_sense: int | None = None  # device ticks_us: a sense input saw the light change (boards with one)
    # Tapped brokers, host side first: host ns when each delivered the command and the state to its tap
    # (None where its tap did not see it); empty without taps.
    taps: dict[str, tuple[int | None, int | None]] = dataclasses.field(default_factory=dict)

    @property
    def e2e_ms(self) -> float:
        """From the intended start (open loop) or the send, to the confirmation."""
        start = self.t_intended_ns if self.t_intended_ns is not None else self.t_send_ns
        return (self.t_confirm_ns - start) / 1e6

    @property
    def rx_to_pin_ms(self) -> float:
        return ticks_diff(self.dev_t_pin, self.dev_t_rx, self.ticks_period) / 1000.0

    @property
    def rx_to_tx_ms(self) -> float:
        return ticks_diff(self.dev_t_tx, self.dev_t_rx, self.ticks_period) / 1000.0

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.update(e2e_ms=self.e2e_ms, rx_to_pin_ms=self.rx_to_pin_ms, rx_to_tx_ms=self.rx_to_tx_ms)
        return d


def journey_from_event(kind: str, cid: str, t_send: int, ev: Event, period: int) -> Journey:
    d = ev.data
    return Journey(
        kind=kind,
        id=cid,
        seq=int(d["seq"]),
        state=str(d["state"]),
        brightness=int(d["brightness"]),
        src=str(d.get("src", "")),
        t_send_ns=t_send,
        t_confirm_ns=ev.host_ns,
        dev_t_rx=int(d["t_rx"]),
        dev_t_pin=int(d["t_pin"]),
        dev_t_tx=int(d["t_tx"]),
        ticks_period=period,
        dev_t_sense=int(d["t_sense"]) if isinstance(d.get("t_sense"), int) else None,
    )


def set_command(state: str | None, brightness: int | None, cid: str) -> dict[str, Any]:
    """A set command's fields: the id, and state and brightness when given."""
    cmd: dict[str, Any] = {"id": cid}
    if state is not None:
        cmd["state"] = state
    if brightness is not None:
        cmd["brightness"] = brightness
    return cmd
