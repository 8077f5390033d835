"""SIGINT and SIGTERM end lightctl the same way: one exception in the main thread.

The first SIGINT or SIGTERM raises :class:`Interrupted` (a KeyboardInterrupt,
so every ``finally`` and ``with`` on the way out runs: devices stopped, the
broker stopped, temporary folders removed). Later ones are ignored while that
cleanup runs; it is bounded by timeouts, so a second Ctrl-C cannot cut it
short and leave a process or a traceback behind. SIGKILL cannot be caught:
children die with lightctl anyway (see host_harness.children).
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable
from types import FrameType
from typing import Any

HANDLED = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """lightctl was asked to stop by ``signum``."""

    def __init__(self, signum: int) -> None:
        self.signum = int(signum)
        self.name = signal.Signals(signum).name
        super().__init__(self.name)

    @property
    def exit_code(self) -> int:
        """128 + the signal number, as a shell reports a process a signal ended (130, 143)."""
        return 128 + self.signum


def _say(text: str) -> None:
    # os.write, not print: the handler may run in the middle of a print to stderr.
    with contextlib.suppress(OSError):
        os.write(2, f"\nlightctl: {text}\n".encode())


def _ignore(signum: int, frame: FrameType | None) -> None:
    """A Python-level ignore: unlike SIG_IGN it is not inherited by children started later."""
    _say(f"{signal.Signals(signum).name} ignored: still cleaning up")


def _raise(signum: int, frame: FrameType | None) -> None:
    for s in HANDLED:
        signal.signal(s, _ignore)
    _say(f"{signal.Signals(signum).name}: stopping (devices, broker, temporary folders)")
    raise Interrupted(signum)


def install() -> Callable[[], None]:
    """Route SIGINT and SIGTERM to :class:`Interrupted`; returns a function restoring the old handlers."""
    old: dict[int, Any] = {s: signal.signal(s, _raise) for s in HANDLED}

    def restore() -> None:
        for s, h in old.items():
            signal.signal(s, h)

    return restore
