"""Immediate TCP ACKs on an RFC 2217 connection, for ser2net's Nagle.

ser2net without ``tcp(nodelay)`` (labgrid's exporter starts it so) holds a
reply's second segment until the first is acknowledged; Linux delays that ACK
up to 40 ms. A device line written in two pieces then costs ~40 ms per
exchange. ``TCP_QUICKACK`` on the client acknowledges at once; Linux clears
it again as it sees fit, so it is set after every read.
"""

from __future__ import annotations

import contextlib
import socket
from typing import Any

QUICKACK = getattr(socket, "TCP_QUICKACK", None)  # Linux only
enabled = True  # benchmarks/labgrid_serial.py measures without it too


class _QuickAckSocket:
    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def recv(self, n: int, *flags: int) -> bytes:
        data = self._sock.recv(n, *flags)
        with contextlib.suppress(OSError):
            self._sock.setsockopt(socket.IPPROTO_TCP, QUICKACK, 1)  # type: ignore[arg-type]
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def quick_acks(port: Any) -> bool:
    """Make a pyserial ``rfc2217://`` (or ``socket://``) port acknowledge at once; False if not one."""
    sock = getattr(port, "_socket", None)
    if not enabled or QUICKACK is None or not isinstance(sock, socket.socket):
        return False
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, QUICKACK, 1)
    port._socket = _QuickAckSocket(sock)  # the reader thread looks the socket up on every read
    return True
