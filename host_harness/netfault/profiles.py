"""Link profiles from published ESP32 measurements.

Delays are round-trip times (ms) as quantile knots ``(quantile, ms)`` from 0
to 1: the published figures are pings from an ESP32 to its access point. The
ends (fastest, slowest) are not published; they are set at 3 ms (an awake
ESP32's best ping) and at 1.5x the p99.
"""

from __future__ import annotations

from dataclasses import dataclass

BEACON_MS = 102.4  # 100 TU


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    rtt_ms: tuple[tuple[float, float], ...] | None = None  # round trip, (quantile, ms)
    loss_pct: float = 0.0  # per packet, in each direction
    rate_kbit: int | None = None  # each direction
    wake_ms: float | None = None  # power save: towards the device only at wake-ups, every wake_ms

    def asked(self) -> dict[str, float]:
        """The published round-trip quantiles (p50, p90, p99), ms."""
        names = {0.5: "p50", 0.9: "p90", 0.99: "p99"}
        return {names[q]: v for q, v in (self.rtt_ms or ()) if q in names}


def _rtt(p50: float, p90: float, p99: float) -> tuple[tuple[float, float], ...]:
    return ((0.0, 3.0), (0.5, p50), (0.9, p90), (0.99, p99), (1.0, 1.5 * p99))


NEAR = _rtt(13.3, 23.6, 47.0)

PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile("lan", "no shaping: a veth pair through a router namespace"),
        Profile("wifi-near", "ESP32 ping to its router, 2 048 pings: p50 13.3, p90 23.6, p99 47.0 ms", NEAR),
        Profile("wifi-wall", "ESP32 through a wall: p50 16.2, p90 42.6, p99 114 ms", _rtt(16.2, 42.6, 114.0)),
        Profile("wifi-lossy", "5 % of packets lost in each direction, no added delay", loss_pct=5.0),
        Profile(
            "wifi-powersave",
            f"radio sleeping between beacons: frames to the device wait for its wake-up every "
            f"3 x {BEACON_MS:g} ms (DTIM 3), on top of wifi-near",
            NEAR,
            wake_ms=3 * BEACON_MS,
        ),
    )
}
