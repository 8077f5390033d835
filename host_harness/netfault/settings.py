"""A proxy direction's fault settings: delay, jitter, blackhole, pause, packet drops.

Safe to change from any thread.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar, overload

from host_harness.core.events import WaitTimeout

log = logging.getLogger(__name__)
DirectionName = Literal["up", "down"]
Which = Literal["up", "down", "both"]
PacketMatch = Callable[[bytes], bool]
T = TypeVar("T")

# --------------------------------------------------------------------------
# Per-direction settings, rules and counters
# --------------------------------------------------------------------------


class DropRule:
    """Drops the next ``count`` packets matching ``match`` in one direction."""

    def __init__(self, direction: str, match: PacketMatch, count: int) -> None:
        self.direction = direction
        self.match = match
        self.count = count
        self.dropped: list[bytes] = []  # the packets dropped so far
        self._done = threading.Event()

    @property
    def remaining(self) -> int:
        return self.count - len(self.dropped)

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def _describe(self) -> str:
        name = getattr(self.match, "__name__", repr(self.match))
        return f"{self.count} {self.direction} packet(s) matching {name}"

    def wait(self, timeout: float) -> list[bytes]:
        """Block until all ``count`` packets were dropped; WaitTimeout otherwise."""
        if not self._done.wait(timeout):
            raise WaitTimeout(
                f"timed out after {timeout:g} s waiting for the proxy to drop {self._describe()} "
                f"({len(self.dropped)} dropped so far)"
            )
        return list(self.dropped)

    def __repr__(self) -> str:
        return f"<DropRule {self._describe()}, {len(self.dropped)} dropped>"


@dataclass(frozen=True)
class DirectionStats:
    """Counters of one direction, summed over all connections."""

    bytes_received: int = 0
    bytes_forwarded: int = 0  # written to the receiving socket
    bytes_dropped: int = 0  # blackholed or inside dropped packets
    bytes_held: int = 0  # received, waiting for their delay or an unpause
    packets_forwarded: int = 0  # MQTT packets, counted at their last byte
    packets_dropped: int = 0


def seconds(what: str, value: float) -> float:
    v = float(value)
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"{what} must be a finite number of seconds >= 0, not {value!r}")
    return v


def flag(what: str, value: object) -> bool:
    return bool(value)


class Locked(Generic[T]):
    """An attribute stored as ``_<name>``, read and written under the owner's ``_lock``.

    A value written goes through ``convert(name, value)`` first (which may refuse
    it); with ``notify`` the owner's ``_changed()`` is called once it is written.
    """

    def __init__(self, convert: Callable[[str, Any], T], notify: bool = False, doc: str | None = None) -> None:
        self.convert = convert
        self.notify = notify
        self.__doc__ = doc

    def __set_name__(self, owner: type, name: str) -> None:
        self.name, self.attr = name, f"_{name}"

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> Locked[T]: ...
    @overload
    def __get__(self, obj: object, owner: type | None = None) -> T: ...
    def __get__(self, obj: object | None, owner: type | None = None) -> T | Locked[T]:
        if obj is None:
            return self
        with obj._lock:  # type: ignore[attr-defined]
            return getattr(obj, self.attr)

    def __set__(self, obj: object, value: Any) -> None:
        v = self.convert(self.name, value)
        with obj._lock:  # type: ignore[attr-defined]
            setattr(obj, self.attr, v)
        if self.notify:
            obj._changed()  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Settings:
    delay_s: float
    jitter_s: float
    blackhole: bool
    paused: bool
    has_rules: bool


class Direction:
    """Settings and counters of one direction; every method is thread-safe."""

    def __init__(self, name: DirectionName, changed: Callable[[], None]) -> None:
        self.name: DirectionName = name
        self._changed = changed
        self._lock = threading.Lock()
        self._delay_s = 0.0
        self._jitter_s = 0.0
        self._blackhole = False
        self._paused = False
        self._rules: list[DropRule] = []
        self._stats = DirectionStats()

    # -- settings -------------------------------------------------------------
    delay_s = Locked(seconds)
    jitter_s = Locked(seconds)
    blackhole = Locked(flag)
    paused = Locked(flag, notify=True)  # held bytes may go now

    def drop_next(self, match: PacketMatch, count: int = 1) -> DropRule:
        """Drop the next ``count`` whole MQTT packets for which ``match(packet)`` is true."""
        if count < 1:
            raise ValueError(f"count must be >= 1, not {count!r}")
        rule = DropRule(self.name, match, count)
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear(self) -> None:
        """No delay, no jitter, no blackhole, not paused, no drop rules."""
        with self._lock:
            self._delay_s = self._jitter_s = 0.0
            self._blackhole = self._paused = False
            self._rules.clear()
        self._changed()

    @property
    def rules(self) -> list[DropRule]:
        with self._lock:
            return list(self._rules)

    @property
    def stats(self) -> DirectionStats:
        with self._lock:
            return self._stats

    def __repr__(self) -> str:
        with self._lock:
            return (
                f"<Direction {self.name} delay={self._delay_s:g}s jitter={self._jitter_s:g}s "
                f"blackhole={self._blackhole} paused={self._paused} rules={len(self._rules)}>"
            )

    # -- used by the event-loop thread ------------------------------------------
    def _settings(self) -> Settings:
        with self._lock:
            return Settings(self._delay_s, self._jitter_s, self._blackhole, self._paused, bool(self._rules))

    def _take(self, packet: bytes) -> bool:
        """True if a rule claims (drops) this packet."""
        with self._lock:
            for rule in self._rules:
                try:
                    hit = bool(rule.match(packet))
                except Exception:
                    log.exception("drop rule %r raised; treating the packet as not matching", rule)
                    hit = False
                if hit:
                    rule.dropped.append(packet)
                    if rule.remaining <= 0:
                        self._rules.remove(rule)
                        rule._done.set()
                    return True
        return False

    def _count(self, **add: int) -> None:
        with self._lock:
            s = self._stats
            self._stats = dataclasses.replace(s, **{k: getattr(s, k) + v for k, v in add.items()})


@dataclass(frozen=True)
class ProxyStats:
    up: DirectionStats
    down: DirectionStats
    connections_accepted: int
    connections_refused: int  # accepted and closed at once (``refuse``)
    connections_failed: int  # upstream could not be reached
    connections_active: int
    connections_cut: int

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
