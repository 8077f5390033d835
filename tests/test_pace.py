"""The open-loop sender's pacing: never early, and other threads keep running while it waits."""

from __future__ import annotations

import random
import socket
import threading
import time

from host_harness.measure import pace


def test_until_never_returns_before_the_time_asked() -> None:
    rng = random.Random(3)
    for _ in range(200):
        t = time.monotonic_ns() + rng.randrange(0, 2 * pace.SPIN_NS)
        assert pace.until(t) >= t
        assert time.monotonic_ns() >= t
    assert pace.until(time.monotonic_ns() - 1_000_000) > 0  # already past: at once


def test_a_thread_woken_while_the_sender_spins_runs_before_the_spin_ends() -> None:
    # The MQTT client's reader is such a thread: a confirmation arriving during
    # the last stretch before a send must not wait for the send.
    a, b = socket.socketpair()
    got: list[int] = []

    def reader() -> None:
        while True:
            data = b.recv(16)
            if data == b"end":
                return
            got.append(time.monotonic_ns())

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    late = 0
    for _ in range(20):
        start = len(got)
        a.send(b"x")
        end = pace.until(time.monotonic_ns() + pace.SPIN_NS - 1)  # all spun, none slept
        late += len(got) == start or got[-1] > end
    a.send(b"end")
    t.join(5)
    a.close()
    b.close()
    assert late <= 2, f"the reader ran only after the spin in {late} of 20 sends"
