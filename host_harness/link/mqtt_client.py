"""The host's MQTT client (paho-mqtt), stamping every message on arrival."""

from __future__ import annotations

import contextlib
import json
import select
import socket
import ssl
import threading
import time
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from host_harness.broker.info import BrokerInfo
from host_harness.core.events import Event, EventLog, WaitTimeout
from host_harness.core.ids import IdMaker

QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)


def ack_now(client: paho.Client) -> None:
    """ACK what the client has read now, not up to 40 ms later or with its
    next packet. A broker with Nagle on (a stock Mosquitto) holds its next
    message to us until that ACK comes; once the socket is in the kernel's
    interactive mode (a closed loop puts it there: we send right after we
    receive) ACKs wait for our next packet, and at a high command rate each
    report waited for the next command. Linux only; the option is not
    sticky, so it is set after every packet paho hands us (messages, CONNACK,
    SUBACK, and PINGRESP, which paho tells only in its log)."""
    sock = client.socket()
    if QUICKACK is not None and isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, QUICKACK, 1)


def publish_packet(topic: str, payload: bytes, qos: int = 0, pid: int = 1, retain: bool = False) -> bytes:
    """An MQTT 3.1.1 PUBLISH (packet id ``pid`` when ``qos`` is not 0)."""
    t = topic.encode()
    body = len(t).to_bytes(2, "big") + t + (pid.to_bytes(2, "big") if qos else b"") + payload
    n, length = len(body), bytearray()
    while True:
        n, b = n >> 7, n & 0x7F
        length.append(b | (0x80 if n else 0))
        if not n:
            break
    return bytes([0x30 | qos << 1 | (1 if retain else 0)]) + bytes(length) + body


class HostMqtt:
    """A paho client whose received messages land in an EventLog.

    A QoS 0 publish is written to the socket by the calling thread, at once.
    paho, run by its own network thread (``loop_start``), only queues it and
    wakes that thread through a socket pair to write it: on an idle 2-core
    machine that hand-over took 0.2 ms with messages 1 ms apart and 0.5 ms
    with them 100 ms apart, and it fell inside every journey the harness
    timed. Whenever paho has something of its own still to write (and over
    TLS, whose connection one thread at a time must use) paho sends it,
    so nothing overtakes what was queued before it.
    """

    def __init__(
        self,
        broker: BrokerInfo,
        name: str = "host",
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
    ) -> None:
        """``ca_file``: the CA that signed a TLS broker's certificate (default:
        the system's); ``cert_file``/``key_file``: a client certificate."""
        self.broker = broker
        self.client_id = IdMaker(f"lightctl-{name}-")()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id)
        if broker.username is not None:
            self.client.username_pw_set(broker.username, broker.password)
        if broker.tls:
            ctx = ssl.create_default_context(cafile=ca_file)
            if cert_file:
                ctx.load_cert_chain(cert_file, key_file)
            self.client.tls_set_context(ctx)
        self.log = EventLog(f"MQTT {broker.redacted_url()}")
        self._connected = threading.Event()
        self._connect_error: str | None = None
        self._subacks: dict[int, threading.Event] = {}
        self._subs: dict[str, int] = {}
        self._connected_once = False
        self.reconnects = -1  # connections after the first
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()  # publishers of this client, one at a time on the socket
        self.client.reconnect_delay_set(min_delay=0.1, max_delay=2)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.on_socket_open = self._on_socket_open
        self.client.on_unsubscribe = self._on_subscribe  # an UNSUBACK sets the same kind of event
        self.client.on_log = self._on_log

    @staticmethod
    def _on_socket_open(client: paho.Client, userdata: Any, sock: Any) -> None:
        # Nagle off: a PUBACK followed by the next command must not wait for
        # the broker's delayed ACK (~40 ms on Linux); paho leaves it on.
        if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
        ack_now(client)
        if rc.is_failure:
            self._connect_error = str(rc)
        elif self._connected_once:
            # A reconnect after the broker went away: a clean session lost
            # the subscriptions, so make them again.
            with self._lock:
                subs = list(self._subs.items())
            for topic, qos in subs:
                client.subscribe(topic, qos)
        self._connected_once = True
        self.reconnects += 1
        self._connected.set()

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, rc: Any, props: Any = None) -> None:
        self._connected.clear()

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, rcs: Any, props: Any = None) -> None:
        ack_now(client)
        with self._lock:
            ev = self._subacks.get(mid)
        if ev:
            ev.set()

    @staticmethod
    def _on_log(client: paho.Client, userdata: Any, level: int, buf: str) -> None:
        # paho tells of a PINGRESP only in its log. Left to a delayed ACK, it
        # would hold the broker's next message to us for up to 40 ms on a
        # stock Mosquitto (Nagle on), as any packet of ours left unACKed does.
        if buf == "Received PINGRESP":
            ack_now(client)

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        self.log.add(message_event(msg, time.monotonic_ns()))
        ack_now(client)

    def connect(self, timeout: float = 10.0) -> HostMqtt:
        try:
            self.client.connect(self.broker.host, self.broker.port, keepalive=30)
        except OSError as e:
            raise ConnectionError(f"cannot connect to MQTT broker {self.broker.redacted_url()}: {e}") from e
        self.client.loop_start()
        if not self._connected.wait(timeout):
            self.close()
            raise WaitTimeout(f"timed out after {timeout:g} s waiting for CONNACK from {self.broker.redacted_url()}")
        if self._connect_error:
            err = self._connect_error
            self.close()
            raise ConnectionError(f"MQTT broker {self.broker.redacted_url()} refused connection: {err}")
        return self

    def subscribe(self, topic: str, qos: int = 0, timeout: float = 10.0) -> None:
        done = threading.Event()
        with self._lock:
            rc, mid = self.client.subscribe(topic, qos)
            self._subacks[mid] = done
            self._subs[topic] = qos
        if rc != paho.MQTT_ERR_SUCCESS:
            raise ConnectionError(f"subscribe to {topic} failed: {paho.error_string(rc)}")
        if not done.wait(timeout):
            raise WaitTimeout(f"timed out after {timeout:g} s waiting for SUBACK of {topic}")

    def unsubscribe(self, topic: str, timeout: float = 10.0) -> None:
        """Unsubscribe and wait for the UNSUBACK (after it, the broker sends nothing more on ``topic``)."""
        done = threading.Event()
        with self._lock:
            self._subs.pop(topic, None)
            rc, mid = self.client.unsubscribe(topic)
            self._subacks[mid] = done
        if rc != paho.MQTT_ERR_SUCCESS:
            raise ConnectionError(f"unsubscribe from {topic} failed: {paho.error_string(rc)}")
        if not done.wait(timeout):
            raise WaitTimeout(f"timed out after {timeout:g} s waiting for UNSUBACK of {topic}")

    def publish(self, topic: str, payload: str | bytes, qos: int = 0, retain: bool = False) -> int:
        """Publish; returns time.monotonic_ns() just before it was written (or handed to paho)."""
        data = payload.encode() if isinstance(payload, str) else payload
        t = time.monotonic_ns()
        if qos == 0 and self._write_now(publish_packet(topic, data, retain=retain)):
            return t
        info = self.client.publish(topic, data, qos=qos, retain=retain)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise ConnectionError(f"publish to {topic} failed: {paho.error_string(info.rc)}")
        return t

    def _write_now(self, pkt: bytes, timeout: float = 5.0) -> bool:
        """Write a whole packet on the connection from this thread; False: leave it to paho."""
        sock = self.client.socket()
        if (
            not self._connected.is_set()
            or not isinstance(sock, socket.socket)
            or isinstance(sock, ssl.SSLSocket)
            or self.client.want_write()
        ):
            return False
        with self._write_lock:
            try:
                n = sock.send(pkt)
            except BlockingIOError:
                return False  # nothing written: paho queues it
            except OSError:
                return False  # the link went down: paho's reconnect handles it
            while n < len(pkt):  # a full send buffer took part of it: the rest, before anything else
                if not select.select([], [sock], [], timeout)[1]:
                    raise ConnectionError(
                        f"timed out after {timeout:g} s writing a PUBLISH to {self.broker.redacted_url()}"
                    )
                n += sock.send(pkt[n:])
        return True

    def close(self) -> None:
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()


def message_event(msg: paho.MQTTMessage, now: int) -> Event:
    """A received message as an Event: its JSON object (or ``{"payload": text}``),
    ``ev`` defaulting to the topic's last level, stamped ``now``."""
    text = msg.payload.decode("utf-8", "replace")
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        data = {"payload": text}
    data.setdefault("ev", msg.topic.rsplit("/", 1)[-1])
    data["_retained"] = bool(msg.retain)
    return Event(data=data, host_ns=now, via="mqtt", topic=msg.topic)
