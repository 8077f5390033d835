"""The host's serial reader over a socket:// URL: noise never breaks it."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from host_harness.core.events import WaitTimeout
from host_harness.link.serial_link import SerialLink


@pytest.fixture
def server() -> Iterator[tuple[socket.socket, int]]:
    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(5)
    yield srv, srv.getsockname()[1]
    srv.close()


def test_events_are_found_between_banners_tracebacks_and_binary_noise(server: tuple[socket.socket, int]) -> None:
    srv, port = server
    link = SerialLink(f"socket://127.0.0.1:{port}")
    conn, _ = srv.accept()
    try:
        conn.sendall(
            b"ets Jun  8 2016 00:22:57\r\nrst:0x1 (POWERON_RESET),boot:0x13\r\n"
            b"\x00\xff\xfe garbage \x1b[0m\r\n"
            b'{"ev":"boot","version":"x"}\r\n'
            b'Traceback (most recent call last):\n  File "main.py", line 1\nMemoryError: \n'
            b'>>> {"ev":"pong","id":"p1","ticks":5}\n'
            b'{"ev":"truncated", "id"\n' + b"x" * 10000 + b"\n" + b'{"ev":"change","id":"c1","seq":1}\n'
        )
        c = link.log.wait_for(lambda e: e.get("id") == "c1", 5, "change c1")
        kinds = [e.kind for e in link.log.events()]
        assert kinds == ["boot", "pong", "change"]
        assert c.host_ns > 0
        assert any("POWERON_RESET" in n for n in link.noise)
        assert any("MemoryError" in n for n in link.noise)
        # a command goes out as one JSON line
        link.send({"op": "get", "id": "g1"})
        conn.settimeout(5)
        assert conn.recv(100) == b'{"op":"get","id":"g1"}\n'
    finally:
        conn.close()
        link.close()


def test_a_vanished_port_ends_waits_with_a_clear_message(server: tuple[socket.socket, int]) -> None:
    srv, port = server
    link = SerialLink(f"socket://127.0.0.1:{port}")
    conn, _ = srv.accept()
    t = threading.Timer(0.2, conn.close)
    t.start()
    try:
        with pytest.raises(WaitTimeout, match="gave up waiting for a boot event"):
            link.log.wait_for(lambda e: e.kind == "boot", 5, "a boot event")
    finally:
        link.close()


def test_a_wrong_port_is_a_clear_error() -> None:
    with pytest.raises(ConnectionError, match="/dev/ttyDOESNOTEXIST"):
        SerialLink("/dev/ttyDOESNOTEXIST")
