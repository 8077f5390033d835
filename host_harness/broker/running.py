"""A running broker's common face, an external broker, and waiting for a port to listen."""

from __future__ import annotations

import socket
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from types import TracebackType
from typing import Literal, Self

from host_harness.broker.info import KIND_AMQTT, KIND_MOSQUITTO, LOOPBACK, BrokerInfo

#: Seconds to wait for a started broker to accept TCP connections.
START_TIMEOUT = 10.0
#: Seconds to wait for a broker to stop before escalating (kill / give up).
STOP_TIMEOUT = 5.0
_POLL_INTERVAL = 0.02

# --------------------------------------------------------------------------
# Socket helpers
# --------------------------------------------------------------------------


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port on ``host`` that is free right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _accepts_connection(host: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=max(timeout, 0.01)):
            return True
    except OSError:
        return False


_WaitResult = Literal["listening", "died", "timeout"]


def wait_for_listen(host: str, port: int, deadline: float, died: Callable[[], bool]) -> _WaitResult:
    """Poll until ``host:port`` accepts a TCP connection, ``died()`` or the deadline."""
    while True:
        if died():
            return "died"
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return "timeout"
        if _accepts_connection(host, port, min(0.5, remaining)):
            # The thing we probed might be someone else who grabbed the port.
            return "died" if died() else "listening"
        time.sleep(min(_POLL_INTERVAL, max(deadline - time.monotonic(), 0)))


# --------------------------------------------------------------------------
# RunningBroker
# --------------------------------------------------------------------------


class RunningBroker(ABC):
    """A broker the harness can use; stop it when done (or use ``with``)."""

    info: BrokerInfo

    @property
    def kind(self) -> str:
        return self.info.kind

    @property
    @abstractmethod
    def running(self) -> bool:
        """True while the broker is (believed to be) serving."""

    @abstractmethod
    def describe(self) -> str:
        """One human-readable line, safe to log (no password)."""

    def latency_settings(self) -> dict[str, str]:
        """The broker settings that change latency, as far as the harness knows them."""
        return {}

    @abstractmethod
    def stop(self) -> None:
        """Stop the broker and release its resources.  Idempotent."""

    @abstractmethod
    def restart(self) -> None:
        """Stop and start again on the same host and port."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<{type(self).__name__} {state} {self.info.redacted_url()}>"


class ExternalBroker(RunningBroker):
    """A broker somebody else runs; the harness only knows its URL."""

    def __init__(self, info: BrokerInfo) -> None:
        self.info = info

    @property
    def running(self) -> bool:
        return True

    def describe(self) -> str:
        return f"external broker {self.info.redacted_url()}"

    def stop(self) -> None:
        """Nothing to do: the harness does not own an external broker."""

    def restart(self) -> None:
        raise RuntimeError(
            f"cannot restart external broker {self.info.redacted_url()}: the harness did not start it "
            f"(use --broker {KIND_MOSQUITTO} or --broker {KIND_AMQTT} for broker-restart tests)"
        )
