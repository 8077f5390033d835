"""MQTT packet framing on a byte stream.

Splits a TCP stream into whole MQTT packets; reads a PUBLISH's topic and payload.
"""

from __future__ import annotations

from dataclasses import dataclass

_PUBLISH = 0x30


def _split_publish(packet: bytes) -> tuple[str, bytes] | None:
    """(topic, payload) of one whole MQTT 3.1.1 PUBLISH packet, else None."""
    if len(packet) < 2 or packet[0] & 0xF0 != _PUBLISH:
        return None
    length, shift, i = 0, 0, 1
    while True:
        if i >= len(packet) or i > 4:
            return None
        b = packet[i]
        length |= (b & 0x7F) << shift
        i += 1
        if not b & 0x80:
            break
        shift += 7
    body = packet[i : i + length]
    if len(body) != length or length < 2:
        return None
    tlen = (body[0] << 8) | body[1]
    rest = 2 + tlen + (2 if packet[0] & 0x06 else 0)  # QoS > 0 has a packet id
    if rest > length:
        return None
    return body[2 : 2 + tlen].decode("utf-8", "replace"), bytes(body[rest:])


def mqtt_publish_topic(packet: bytes) -> str | None:
    """The topic of a whole MQTT PUBLISH packet, None for any other packet."""
    parsed = _split_publish(packet)
    return None if parsed is None else parsed[0]


def mqtt_publish_payload(packet: bytes) -> bytes | None:
    """The application payload of a whole MQTT PUBLISH packet, None for any other packet."""
    parsed = _split_publish(packet)
    return None if parsed is None else parsed[1]


@dataclass(frozen=True)
class Piece:
    """A run of bytes from one MQTT packet (or raw bytes once framing is lost)."""

    data: bytes
    start: bool  # the packet's first byte is in here
    end: bool  # the packet's last byte is in here
    framed: bool = True  # False: the stream is not MQTT, pass it through


class MqttFramer:
    """Splits a byte stream at MQTT packet boundaries, whatever the chunking.

    ``split(chunk)`` returns the chunk as pieces, each inside one packet.  A
    stream that cannot be MQTT (reserved packet type 0 or a remaining length
    longer than 4 bytes) turns the framer ``broken``: from then on it hands
    the bytes through unframed.
    """

    def __init__(self) -> None:
        self._header = bytearray()  # fixed header read so far
        self._need = 0  # body bytes still to come
        self._in_body = False
        self.broken = False

    def split(self, data: bytes) -> list[Piece]:
        out: list[Piece] = []
        i, n = 0, len(data)
        while i < n:
            if self.broken:
                out.append(Piece(data[i:], False, False, framed=False))
                break
            if self._in_body:
                k = min(self._need, n - i)
                self._need -= k
                end = self._need == 0
                self._in_body = not end
                out.append(Piece(data[i : i + k], False, end))
                i += k
                continue
            start = not self._header
            j = i
            complete = False
            while j < n:
                b = data[j]
                j += 1
                self._header.append(b)
                if len(self._header) == 1 and b & 0xF0 == 0:
                    self.broken = True
                    break
                if len(self._header) >= 2 and not b & 0x80:
                    complete = True
                    break
                if len(self._header) >= 5:
                    self.broken = True
                    break
            if self.broken:
                out.append(Piece(data[i:j], start, False, framed=False))
                self._header.clear()
                i = j
                continue
            length = 0
            if complete:
                for k, b in enumerate(self._header[1:]):
                    length |= (b & 0x7F) << (7 * k)
                self._header.clear()
                self._need = length
                self._in_body = length > 0
            out.append(Piece(data[i:j], start, complete and length == 0))
            i = j
        return out
