"""A Mosquitto started the way users start it: ``mosquitto -p PORT``.

No config file, so no ``set_tcp_nodelay``: Nagle's algorithm is on for every
client socket, as on a stock install. Listens on loopback only (Mosquitto 2
with ``-p`` alone binds the loopback interfaces and allows anonymous local
clients).
"""

from __future__ import annotations

import socket
import subprocess
import time
from types import TracebackType
from typing import Self

from .info import KIND_MOSQUITTO, LOOPBACK, BrokerInfo
from .mosquitto import find_mosquitto
from .running import RunningBroker, free_port

START_TIMEOUT = 10.0


class StockMosquitto(RunningBroker):
    def __init__(self, port: int | None = None, executable: str | None = None) -> None:
        exe = find_mosquitto(executable)
        if exe is None:
            raise RuntimeError("mosquitto is not installed (apt-get install mosquitto)")
        self.executable = exe
        self.port = port or free_port()
        self.info = BrokerInfo.local(KIND_MOSQUITTO, self.port)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def describe(self) -> str:
        return f"stock mosquitto (mosquitto -p {self.port}) on {self.info.redacted_url()}"

    def start(self) -> Self:
        self.proc = subprocess.Popen(
            [self.executable, "-p", str(self.port)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto -p {self.port} exited with code {self.proc.returncode}")
            try:
                with socket.create_connection((LOOPBACK, self.port), timeout=0.5):
                    return self
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"mosquitto -p {self.port}: not listening after {START_TIMEOUT:.0f} s") from None
                time.sleep(0.02)

    def stop(self) -> None:
        p, self.proc = self.proc, None
        if p is not None and p.poll() is None:
            p.terminate()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> Self:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
