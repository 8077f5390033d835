"""Recognise the usual culprits of a broken latency budget from the shape of the delays.

Pure: given one hop's (or the whole journey's) samples in ms, look for

* a step near **40 ms**: Nagle's algorithm holding a small write until the
  previous one is acknowledged, while the peer delays its ACK (Linux's delayed
  ACK waits at least 40 ms);
* a step near **200 ms** (or 600 ms, after a backoff): a TCP retransmission
  timeout, i.e. a segment was lost on the link (Linux and lwIP both wait at
  least 200 ms before resending when no duplicate ACKs arrive);
* delays near **multiples of ~102.4 ms**, or spread flat up to such a
  multiple: a radio sleeping between Wi-Fi beacons (power save), frames for
  it buffered at the access point until it wakes;
* steps of **whole seconds**: something on the path polls once a second.

And from a link's packet record (``batching``): commands sent apart that
crossed towards the device **in one TCP segment**: the broker held each small
write while its previous one was unacknowledged (Nagle on its socket to the
device), which happens whenever the link's round trip is longer than the
commands' spacing. No device can ACK sooner than a round trip, so only the
broker's socket option removes it.

A *step* is a minority of samples standing off a fast majority by the
culprit's amount, with few samples in the valley between; a spread of jitter
(a Wi-Fi link's ordinary delays) has no valley and is not called a step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

DELAYED_ACK_MS = 40.0  # Linux TCP_DELACK_MIN
RTO_MIN_MS = 200.0  # Linux TCP_RTO_MIN, lwIP's minimum RTO
BEACON_MS = 102.4  # 100 TU, the usual Wi-Fi beacon interval
SECOND_MS = 1000.0

NAGLE = "nagle-delayed-ack"
RETRANSMISSION = "retransmission"
BEACON = "power-save"
POLLING = "polling"
BATCHED = "broker-batching"

FIXES = {
    NAGLE: (
        "set TCP_NODELAY on the sending socket (device, broker: Mosquitto 'set_tcp_nodelay true', host client) "
        "and write each MQTT packet in one send"
    ),
    RETRANSMISSION: (
        "the link loses packets and TCP waits out its retransmission timeout: improve the link "
        "(signal, channel, access point placement), keep the device off lossy paths, or accept it in the budget"
    ),
    BEACON: (
        "turn Wi-Fi power save off on the device (MicroPython: wlan.config(pm=wlan.PM_NONE); "
        "ESP-IDF: esp_wifi_set_ps(WIFI_PS_NONE)), or lower the DTIM/listen interval"
    ),
    BATCHED: (
        "set TCP_NODELAY on the broker's sockets (Mosquitto: 'set_tcp_nodelay true'), "
        "or send commands to one light further apart than the link's round trip"
    ),
    POLLING: (
        "make the slow stage event-driven (select/poll or asyncio on the socket) instead of a loop "
        "that sleeps or times out once a second"
    ),
}

LABELS = {
    NAGLE: "Nagle meeting a delayed ACK",
    RETRANSMISSION: "TCP retransmission timeout",
    BEACON: "radio sleeping between beacons",
    POLLING: "polling once a second",
    BATCHED: "the broker sending commands together",
}


@dataclass(frozen=True)
class Diagnosis:
    culprit: str  # one of NAGLE, RETRANSMISSION, BEACON, POLLING, BATCHED
    evidence: str
    fix: str

    def line(self) -> str:
        return f"{LABELS[self.culprit]}: {self.evidence}; fix: {self.fix}"


def _q(xs: Sequence[float], p: float) -> float:
    """Quantile of sorted ``xs`` (nearest rank)."""
    i = min(len(xs) - 1, max(0, round(p * (len(xs) - 1))))
    return xs[i]


def _near_multiple(x: float, unit: float, below: float, above: float, kmax: int = 10) -> bool:
    k = round(x / unit)
    return 1 <= k <= kmax and k * unit - below <= x <= k * unit + above


def _step(
    excess: list[float], n: int, window: tuple[float, float], valley: tuple[float, float]
) -> tuple[int, int] | None:
    """(samples in the window, samples in the valley) when they form a step."""
    inside = sum(1 for e in excess if window[0] <= e <= window[1])
    between = sum(1 for e in excess if valley[0] <= e < valley[1])
    if inside >= max(2, 0.01 * n) and between * 2 < inside:
        return inside, between
    return None


def _pct(k: int, n: int) -> str:
    return f"{k} of {n} ({100.0 * k / n:.0f} %)"


def diagnose(samples_ms: Sequence[float]) -> list[Diagnosis]:
    """The culprits the shape of ``samples_ms`` points at (none when it looks like plain jitter)."""
    xs = sorted(float(x) for x in samples_ms)
    n = len(xs)
    if n < 5:
        return []
    out: list[Diagnosis] = []
    base = _q(xs, 0.10)
    slow = [x for x in xs if x > base + 20.0 + 0.5 * base]
    if len(slow) * 2 <= n:
        # A fast majority and a slow minority: look at how far the slow ones stand off.
        excess = [x - base for x in xs]
        nagle = _step(excess, n, (DELAYED_ACK_MS - 10, DELAYED_ACK_MS + 20), (12.0, DELAYED_ACK_MS - 10))
        if nagle:
            out.append(
                Diagnosis(
                    NAGLE, f"{_pct(nagle[0], n)} samples stand ~{DELAYED_ACK_MS:g} ms above the rest", FIXES[NAGLE]
                )
            )
        rto = [
            e
            for e in excess
            if RTO_MIN_MS - 15 <= e <= RTO_MIN_MS + 150 or 3 * RTO_MIN_MS - 40 <= e <= 3 * RTO_MIN_MS + 150
        ]
        rto_valley = sum(1 for e in excess if 90.0 <= e < RTO_MIN_MS - 15)
        if len(rto) >= max(2, 0.01 * n) and rto_valley * 2 < len(rto):
            out.append(
                Diagnosis(
                    RETRANSMISSION,
                    f"{_pct(len(rto), n)} samples stand {RTO_MIN_MS:g} ms or more above the rest",
                    FIXES[RETRANSMISSION],
                )
            )
        secs = [e for e in excess if _near_multiple(e, SECOND_MS, 0.1 * SECOND_MS, 0.15 * SECOND_MS)]
        secs_valley = sum(1 for e in excess if 0.3 * SECOND_MS <= e < 0.9 * SECOND_MS)
        if len(secs) >= max(2, 0.01 * n) and secs_valley * 2 < len(secs) and not out:
            out.append(
                Diagnosis(POLLING, f"{_pct(len(secs), n)} samples stand whole seconds above the rest", FIXES[POLLING])
            )
        if out:
            return out
    # No step: does the whole distribution have a culprit's shape?
    secs = [x for x in xs if _near_multiple(x, SECOND_MS, 0.1 * SECOND_MS, 0.15 * SECOND_MS)]
    if len(secs) >= 0.6 * n:
        return [Diagnosis(POLLING, f"{_pct(len(secs), n)} samples sit at whole seconds", FIXES[POLLING])]
    # One stall per journey sits at ~40 ms, two (one each way) at ~80 ms.
    stalls = [x for x in xs if _near_multiple(x, DELAYED_ACK_MS, 5.0, 15.0, kmax=3)]
    if len(stalls) >= 0.6 * n:
        return [
            Diagnosis(NAGLE, f"{_pct(len(stalls), n)} samples sit at multiples of ~{DELAYED_ACK_MS:g} ms", FIXES[NAGLE])
        ]
    beacon = [x for x in xs if _near_multiple(x, BEACON_MS, 30.0, 10.0)]
    if len(beacon) >= 0.7 * n:
        return [
            Diagnosis(
                BEACON,
                f"{_pct(len(beacon), n)} samples sit just below multiples of {BEACON_MS:g} ms (the beacon interval)",
                FIXES[BEACON],
            )
        ]
    top = _q(xs, 0.95)
    k = round(top / BEACON_MS)
    if k >= 1 and abs(top - k * BEACON_MS) <= 0.12 * k * BEACON_MS and 0.3 <= _q(xs, 0.5) / top <= 0.7:
        return [
            Diagnosis(
                BEACON,
                f"samples spread flat from ~0 up to {top:.0f} ms, about {k} x {BEACON_MS:g} ms (a wake-up interval)",
                FIXES[BEACON],
            )
        ]
    return []


def explain(samples_ms: Sequence[float]) -> list[str]:
    """One line per recognised culprit, each with its fix."""
    return [d.line() for d in diagnose(samples_ms)]


def batching(commands: int, segments: int, most: int) -> Diagnosis | None:
    """``commands`` crossed towards the device in ``segments`` TCP segments, at most ``most`` in
    one: a diagnosis when some shared a segment though each was written on its own."""
    if commands < 2 or segments >= commands:
        return None
    shared = commands - segments
    return Diagnosis(
        BATCHED,
        f"{commands} commands crossed the link in {segments} TCP segments (up to {most} in one): "
        f"the broker held {_pct(shared, commands)} back until its previous write to the device was acknowledged",
        FIXES[BATCHED],
    )
