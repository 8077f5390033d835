"""A device under test: a Unix-port process or a board on a serial port.

Both are driven the same way, through the serial link; the Unix port is only
started and stopped differently.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from host_harness.broker.info import BrokerInfo
from host_harness.core.events import Event, WaitTimeout
from host_harness.core.ids import IdMaker
from host_harness.dut import boards
from host_harness.dut.unix_device import DEFAULT_HEAPSIZE, UnixDevice
from host_harness.link.replies import REPLY_KIND
from host_harness.link.serial_link import SerialLink


class CommandError(RuntimeError):
    """The device answered a command with an error event."""

    def __init__(self, event: Event) -> None:
        self.event = event
        super().__init__(f"device refused command {event.get('id')!r}: {event.get('code')}: {event.get('msg')}")


def unix_config(
    board: dict[str, Any],
    broker: BrokerInfo | None,
    device_id: str | None = None,
    base_topic: str = "lightctl",
    keepalive: int = 30,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The device's config.json. ``extra`` is merged in: top-level options
    (``restore``, ``state_file``, ``name`` ...) and, under ``"mqtt"``, MQTT ones
    (``qos``, ``discovery``, ``ca``/``cert``/``key`` file paths: on the Unix
    port the device reads the host's files directly)."""
    cfg: dict[str, Any] = {
        "device_id": device_id or f"unix-{secrets.token_hex(3)}",
        "base_topic": base_topic,
        "board": board,
    }
    if broker is not None:
        cfg["mqtt"] = {
            "host": broker.host,
            "port": broker.port,
            "user": broker.username,
            "password": broker.password,
            "keepalive": keepalive,
            "tls": broker.tls,
        }
    for key, value in (extra or {}).items():
        if key == "mqtt" and "mqtt" in cfg:
            cfg["mqtt"].update(value)
        else:
            cfg[key] = value
    return cfg


class Device:
    def __init__(
        self, link: SerialLink, board: dict[str, Any], unix: UnixDevice | None = None, boot_timeout: float = 20.0
    ) -> None:
        self.link = link
        self.board = board
        self.unix = unix
        self.ids = IdMaker("h")
        self.info: dict[str, Any] = {}
        self.boot_timeout = boot_timeout

    # -- basic exchange ------------------------------------------------------
    @property
    def log(self):
        return self.link.log

    def request(self, op: str, timeout: float = 5.0, **fields: Any) -> tuple[int, Event]:
        """Send a command over serial and wait for its reply (by id).

        Returns (host send time ns, reply event). Raises CommandError when the
        device answers with an error, WaitTimeout when it does not answer.
        """
        cid = fields.pop("id", None) or self.ids()
        since = self.log.cursor
        t = self.link.send({"op": op, "id": cid, **fields})
        kinds = (REPLY_KIND[op], "error") if op in REPLY_KIND else ("error",)
        ev = self.log.wait_for(
            lambda e: e.get("id") == cid and e.kind in kinds,
            timeout,
            f"the device's {'/'.join(kinds)} reply to {op} command {cid!r}",
            since,
        )
        if ev.kind == "error":
            raise CommandError(ev)
        return t, ev

    def set(
        self, state: str | None = None, brightness: int | None = None, timeout: float = 5.0, cmd_id: str | None = None
    ) -> Event:
        fields: dict[str, Any] = {}
        if state is not None:
            fields["state"] = state
        if brightness is not None:
            fields["brightness"] = brightness
        if cmd_id:
            fields["id"] = cmd_id
        return self.request("set", timeout, **fields)[1]

    def get(self, timeout: float = 5.0) -> Event:
        return self.request("get", timeout)[1]

    def ping(self, timeout: float = 5.0) -> tuple[int, Event]:
        return self.request("ping", timeout)

    def press(self, timeout: float = 5.0) -> Event:
        return self.request("press", timeout)[1]

    def fetch_info(self, timeout: float = 5.0) -> dict[str, Any]:
        self.info = dict(self.request("info", timeout)[1].data)
        return self.info

    # -- lifecycle -----------------------------------------------------------
    def wait_boot(self, timeout: float | None = None) -> dict[str, Any]:
        """Wait until the firmware answers info (after a boot or attach)."""
        deadline = time.monotonic() + (timeout or self.boot_timeout)
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.unix is not None and not self.unix.alive:
                raise RuntimeError(f"device process exited during boot; console said:\n{self.link.noise_tail()}")
            try:
                return self.fetch_info(timeout=min(1.0, max(0.05, deadline - time.monotonic())))
            except WaitTimeout as e:
                last = e
        waited = timeout or self.boot_timeout
        if self.link.bytes_read == 0:
            raise WaitTimeout(
                f"nothing at all was read from {self.link.url} in {waited:g} s: is the board on this port, "
                "powered, and running the firmware (lightctl deploy)?"
            )
        raise WaitTimeout(
            f"device on {self.link.url} did not answer info within {waited:g} s "
            f"({last}); console said:\n{self.link.noise_tail()}"
        )

    def wait_mqtt(self, timeout: float = 20.0) -> None:
        """Wait until the device reports its MQTT link up."""
        since = 0
        if self.info.get("mqtt") == "connected":
            return
        self.log.wait_for(
            lambda e: (
                (e.kind == "mqtt" and e.get("status") == "connected")
                or (e.kind == "info" and e.get("mqtt") == "connected")
            ),
            timeout,
            "the device to report its MQTT connection up",
            since,
        )

    @property
    def device_id(self) -> str:
        return str(self.info.get("device_id", ""))

    @property
    def base(self) -> str:
        return f"{self.info.get('base_topic', 'lightctl')}/{self.device_id}"

    def interrupt(self, timeout: float = 5.0) -> str:
        """Ctrl-C: stop the firmware; returns console text up to the REPL prompt."""
        got = bytearray()
        self.link.raw_listeners.append(got.extend)
        try:
            self.link.write_raw(b"\x03")
            deadline = time.monotonic() + timeout
            while b">>> " not in got:
                if time.monotonic() > deadline:
                    raise WaitTimeout(f"no REPL prompt within {timeout:g} s after Ctrl-C; got {bytes(got[-200:])!r}")
                time.sleep(0.02)
        finally:
            self.link.raw_listeners.remove(got.extend)
        return got.decode("utf-8", "replace")

    def close(self) -> None:
        self.link.close()
        if self.unix is not None:
            self.unix.cleanup()


DEFAULT_KEEPALIVE = 30


def unhonoured_options(**given: Any) -> list[str]:
    """The options given (not None) that a device on a serial URL cannot honour:
    its config, id, broker and keepalive were set when it was deployed."""
    return [name for name, value in given.items() if value is not None]


def open_device(
    spec: str = "unix",
    board: str = "unix",
    broker: BrokerInfo | None = None,
    micropython: str | None = None,
    heapsize: str | None = None,
    device_id: str | None = None,
    keepalive: int | None = None,
    precompile: bool = True,
    config: dict[str, Any] | None = None,
    workdir: str | Path | None = None,
    prefix: list[str] | None = None,
    on_link: Callable[[SerialLink], None] | None = None,
) -> Device:
    """Start (``unix``) or attach to (a pyserial URL) a device, ready to use.

    ``config``: extra device options (see :func:`unix_config`); ``workdir``:
    the Unix-port device's working directory (its flash), kept after it stops;
    ``prefix``: a command to run the Unix port under (``ip netns exec NS``);
    ``heapsize`` defaults to DEFAULT_HEAPSIZE, ``keepalive`` to 30 s. A device on a serial
    URL runs what was deployed to it: any of ``broker``, ``micropython``,
    ``heapsize``, ``device_id``, ``keepalive``, ``config``, ``workdir``,
    ``prefix`` (or ``precompile=False``) given for it is a ValueError naming them.
    ``on_link`` is called with the serial link as soon as it is open, before
    the boot is waited for (to log the boot's lines).
    """
    bdef = boards.load(board)
    if spec == "unix":
        cfg = unix_config(bdef, broker, device_id, keepalive=keepalive or DEFAULT_KEEPALIVE, extra=config)
        unix = UnixDevice(cfg, micropython, heapsize or DEFAULT_HEAPSIZE, precompile, workdir=workdir, prefix=prefix)
        try:
            dev = Device(SerialLink(unix.start(), name="unix device"), bdef, unix)
        except BaseException:
            unix.cleanup()
            raise
    else:
        refused = unhonoured_options(
            broker=broker,
            micropython=micropython,
            heapsize=heapsize,
            device_id=device_id,
            keepalive=keepalive,
            config=config,
            workdir=workdir,
            prefix=prefix,
            precompile=None if precompile else False,
        )
        if refused:
            raise ValueError(
                f"device {spec}: cannot honour {', '.join(refused)}: a device on a serial port runs the firmware, "
                "board and config deployed to it (lightctl deploy); "
                "only the Unix port (spec 'unix') is configured per run"
            )
        dev = Device(SerialLink(spec), bdef)
    try:
        if on_link is not None:
            on_link(dev.link)
        dev.wait_boot()
    except BaseException:
        dev.close()
        raise
    return dev
