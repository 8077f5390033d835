"""A packet capture on loopback: when each packet of a journey crossed the wire, on the host's clock.

A journey timed by a client sees only its two ends. ``tcpdump`` on ``lo`` sees
every packet between them: the command going into the broker, out of it to the
device, the device's report into the broker and out of it to the client. Found
by the command id they carry, their times split the journey into what the host
client took, what each broker pass took and what the device took, from the
first byte in to the last byte out, whatever the device is (lightctl's firmware
or a light of another making).

The kernel stamps each packet on ``CLOCK_REALTIME``; :func:`Capture.packets`
moves the stamps to ``CLOCK_MONOTONIC`` (the offset read when the capture
stops), the clock of the harness and of the Unix port's ``ticks_us``. Capturing
needs root (or ``CAP_NET_RAW``) and ``tcpdump``; without them :class:`Capture`
fails with one line saying which.
"""

from __future__ import annotations

import shutil
import signal
import struct
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from host_harness import children

SNAPLEN = 512  # enough for an MQTT header, a topic and a command's or a report's JSON
_NANO = 0xA1B23C4D
_MICRO = 0xA1B2C3D4
_LINKTYPES = {1: 14, 113: 16, 0: 4}  # Ethernet (lo), Linux cooked, BSD loopback: header bytes
PLACES = ("/usr/sbin/tcpdump", "/usr/bin/tcpdump")  # where Debian puts it, often off a user's PATH


@dataclass(frozen=True)
class WirePacket:
    t_ns: int  # CLOCK_MONOTONIC
    src: int  # TCP ports
    dst: int
    data: bytes  # the TCP payload (up to the snap length)


class CaptureError(RuntimeError):
    pass


class Capture:
    """``tcpdump`` on ``lo`` for TCP ``port`` while the ``with`` block runs (or from ``start()`` to
    ``stop()``); ``packets()`` after, until ``close()``."""

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.port = port
        self.timeout = timeout
        self._dir = tempfile.TemporaryDirectory(prefix="lightctl-capture-")
        self.path = Path(self._dir.name) / "lo.pcap"
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._err: list[str] = []
        self._offset_ns = 0

    def __enter__(self) -> Capture:
        return self.start()

    def start(self) -> Capture:
        tcpdump = shutil.which("tcpdump") or next((p for p in PLACES if Path(p).is_file()), None)
        if tcpdump is None:
            raise CaptureError("tcpdump is not installed (apt-get install tcpdump)")
        cmd = [tcpdump, "-i", "lo", "-n", "-U", "--immediate-mode", "-s", str(SNAPLEN), "--time-stamp-precision=nano",
               "-w", str(self.path), f"tcp port {self.port}"]  # fmt: skip
        self._proc = children.spawn(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        listening = threading.Event()
        self._reader = threading.Thread(target=self._read_stderr, args=(listening,), daemon=True)
        self._reader.start()
        started = listening.wait(self.timeout) and self._proc.poll() is None
        if not started:
            self.close()
            said = "".join(self._err).strip()
            if "ermission" in said or "not permitted" in said:
                raise CaptureError("capturing on lo needs root or CAP_NET_RAW (tcpdump: permission denied)")
            if said:
                raise CaptureError(f"tcpdump did not start: {said.splitlines()[-1]}")
            raise CaptureError(f"timed out after {self.timeout:g} s waiting for tcpdump to listen on lo")
        return self

    def _read_stderr(self, listening: threading.Event) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        for raw in self._proc.stderr:
            line = raw.decode(errors="replace")
            self._err.append(line)
            if "listening on" in line:
                listening.set()
        listening.set()  # it ended: start() looks at why

    def stop(self) -> None:
        """End the capture; what it caught stays readable until :meth:`close`."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # writes what it holds, then exits
            try:
                proc.wait(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                children.end(proc)
        if self._reader is not None:
            self._reader.join(timeout=self.timeout)  # its last lines read, then the pipe closed
            self._reader = None
            if proc.stderr is not None:
                proc.stderr.close()
        self._offset_ns = realtime_offset_ns()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def packets(self) -> list[WirePacket]:
        """The TCP packets with a payload, in capture order, stamped on CLOCK_MONOTONIC."""
        try:
            return read_pcap(self.path.read_bytes(), self._offset_ns)
        except FileNotFoundError:
            raise CaptureError("tcpdump wrote no capture") from None

    def close(self) -> None:
        """Stop, and remove what was caught."""
        self.stop()
        self._dir.cleanup()


def realtime_offset_ns(tries: int = 50) -> int:
    """CLOCK_REALTIME less CLOCK_MONOTONIC: the monotonic reading bracketed by two realtime ones,
    the tightest bracket of ``tries`` (a single pair of reads, its first one cold or preempted
    between the two, was off by up to 0.4 ms)."""
    best = (1 << 62, 0)
    for _ in range(tries):
        r1 = time.clock_gettime_ns(time.CLOCK_REALTIME)
        m = time.monotonic_ns()
        r2 = time.clock_gettime_ns(time.CLOCK_REALTIME)
        if r2 - r1 < best[0]:
            best = (r2 - r1, (r1 + r2) // 2 - m)
    return best[1]


def read_pcap(data: bytes, offset_ns: int = 0) -> list[WirePacket]:
    """The IPv4/IPv6 TCP packets with a payload in a pcap file's bytes; ``offset_ns`` is taken off
    each stamp. A last record cut short (a capture stopped mid-write) is left out."""
    if len(data) < 24:
        raise CaptureError(f"not a pcap file: {len(data)} bytes")
    magic = struct.unpack("<I", data[:4])[0]
    if magic not in (_NANO, _MICRO):
        raise CaptureError(f"not a little-endian pcap file (magic {magic:#x})")
    scale = 1 if magic == _NANO else 1000
    linktype = struct.unpack("<I", data[20:24])[0]
    if linktype not in _LINKTYPES:
        raise CaptureError(f"pcap link type {linktype} is not one of {sorted(_LINKTYPES)}")
    skip = _LINKTYPES[linktype]
    out: list[WirePacket] = []
    off = 24
    while off + 16 <= len(data):
        sec, frac, incl, _ = struct.unpack("<IIII", data[off : off + 16])
        off += 16
        if off + incl > len(data):
            break
        pkt = memoryview(data)[off + skip : off + incl]
        off += incl
        tcp = _tcp(pkt)
        if tcp is None:
            continue
        src, dst = struct.unpack(">HH", tcp[:4])
        payload = bytes(tcp[(tcp[12] >> 4) * 4 :])
        if payload:
            out.append(WirePacket(sec * 1_000_000_000 + frac * scale - offset_ns, src, dst, payload))
    return out


def _tcp(ip: memoryview) -> memoryview | None:
    if len(ip) < 20:
        return None
    version = ip[0] >> 4
    if version == 4 and ip[9] == 6:
        tcp = ip[(ip[0] & 15) * 4 :]
    elif version == 6 and len(ip) >= 40 and ip[6] == 6:
        tcp = ip[40:]
    else:
        return None
    return tcp if len(tcp) >= 20 else None


@dataclass(frozen=True)
class Passage:
    """One message's packets through a broker: into it (``into``) and out of it (``out``), by
    monotonic time; ``None`` where the capture holds none. ``data``: the payload of the packet into
    it that carries the needle (not compared)."""

    into: int | None
    out: int | None
    data: bytes = field(default=b"", compare=False)


def passages(packets: list[WirePacket], broker_port: int, needle: bytes) -> list[Passage]:
    """The message carrying ``needle`` each time it went into the broker and came out, in order.

    A message written in pieces (umqtt.simple writes the fixed header, the topic and the payload
    apart) is found by the piece that holds the needle, its last. Each packet out of the broker is
    paired with the last one into it: a command in, then out to the device; its report in, then
    out to the client. A message the broker sends to two subscribers is two passages with one
    ``into``; one that never came out is a passage without ``out``."""
    out: list[Passage] = []
    last: WirePacket | None = None
    sent = True
    for p in packets:
        if needle not in p.data:
            continue
        if p.dst == broker_port:
            if not sent:
                out.append(_passage(last, None))
            last, sent = p, False
        elif p.src == broker_port:
            out.append(_passage(last, p.t_ns))
            sent = True
    if not sent:
        out.append(_passage(last, None))
    return out


def _passage(into: WirePacket | None, out: int | None) -> Passage:
    return Passage(None, out) if into is None else Passage(into.t_ns, out, into.data)
