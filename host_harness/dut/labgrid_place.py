"""A board shared through labgrid: ``labgrid:PLACE`` as a device or port.

labgrid's coordinator hands out places; an exporter on the machine with the
board exports its serial port (``RawSerialPort``/``USBSerialPort``) as a
``NetworkSerialPort``, served by ser2net over RFC 2217 while the place is
acquired (on a new TCP port each time). This module:

- keeps ONE labgrid client session per process (the coordinator's handler
  breaks on a second one from the same process), on its own event-loop thread;
- acquires a place on first use, unless this host/user holds it already (then
  it is used and left acquired: ``labgrid-client acquire`` before a CI job's
  steps works);
- resolves the place's ``NetworkSerialPort`` to
  ``rfc2217://HOST:PORT?ign_set_control`` every time a port is opened, so a
  reconnect after an exporter restart finds the new port;
- releases what it acquired when the process ends: normally, on an exception,
  on Ctrl-C and on SIGTERM/SIGHUP (turned into SystemExit so ``finally`` blocks
  and ``atexit`` run). SIGKILL cannot be caught: ``labgrid-client -p PLACE
  release --kick`` frees such a place.

labgrid is an optional extra (``pip install lightctl[labgrid]``); nothing here
imports it until a ``labgrid:`` spec is used.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import logging
import os
import signal
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

# The harness starts children (mpremote, devices) with a preexec_fn, so with fork();
# while the client's gRPC stream runs, gRPC's fork support crashes ~1 child in 10
# (SIGSEGV). gRPC reads this when it is first imported: set here, before labgrid is.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

PREFIX = "labgrid:"
ENV_COORDINATOR = "LG_COORDINATOR"
# A pty behind ser2net has no modem lines: ser2net does not acknowledge DTR/RTS
# changes on it, and pyserial would wait for that acknowledgement.
URL_OPTIONS = "?ign_set_control"
SERIAL_CLASS = "NetworkSerialPort"
CONNECT_TIMEOUT = 10.0
PORT_TIMEOUT = 10.0
POLL_S = 0.05

_coordinator: str | None = None
_client: _Client | None = None
_held: dict[str, bool] = {}  # place name -> True if this process acquired it (and must release it)
_lock = threading.RLock()
_hooks_installed = False


class LabgridError(ConnectionError):
    """A place that cannot be used; the message is one line and says why."""


def is_place(spec: str) -> bool:
    return spec.startswith(PREFIX)


def place_name(spec: str) -> str:
    name = spec[len(PREFIX) :].strip()
    if not name or "/" in name or ":" in name:
        raise LabgridError(f"bad labgrid device {spec!r}: write labgrid:PLACE (a place name on the coordinator)")
    return name


def set_coordinator(address: str | None) -> str | None:
    """The coordinator for ``labgrid:`` specs (``--lg-coordinator``; None: ``LG_COORDINATOR``).
    Returns the one set before."""
    global _coordinator
    before, _coordinator = _coordinator, address or None
    return before


def coordinator_address(explicit: str | None = None) -> str:
    addr = explicit or _coordinator or os.environ.get(ENV_COORDINATOR)
    if not addr:
        raise LabgridError(
            f"a labgrid place needs its coordinator: pass --lg-coordinator HOST:PORT or set {ENV_COORDINATOR}"
        )
    return addr


def _msg(e: Exception) -> str:
    """labgrid's errors print as 'Error: ...': keep the message only."""
    return str(e.args[0]) if e.args else str(e)


class _QuietLabgrid(logging.Filter):
    """labgrid logs a lost coordinator on the root logger; we raise it as a one-line error instead."""

    def __init__(self, package_dir: str) -> None:
        super().__init__()
        self.package_dir = package_dir

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.pathname.startswith(self.package_dir) and record.levelno < logging.CRITICAL)


class _Client:
    """One labgrid ClientSession on an event loop running in a daemon thread."""

    def __init__(self, address: str, timeout: float = CONNECT_TIMEOUT) -> None:
        try:
            import labgrid
            from labgrid.remote.client import ClientSession
        except ImportError as e:
            raise LabgridError(f"labgrid is not installed ({e}): pip install 'lightctl[labgrid]'") from e
        root = logging.getLogger()
        if not any(isinstance(f, _QuietLabgrid) for f in root.filters):
            root.addFilter(_QuietLabgrid(str(Path(labgrid.__file__).parent)))
        self.address = address
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="labgrid client", daemon=True)
        self.thread.start()

        async def start() -> Any:
            import argparse

            from labgrid.util.proxy import proxymanager

            target = proxymanager.get_grpc_address(address, default_port=20408)
            args = argparse.Namespace(place=None, allow_unmatched=False, kick=False)
            session = ClientSession(target, self.loop, args=args)
            await session.start()
            return session

        try:
            self.session = self._run(start(), timeout, "the connection to the coordinator")
        except LabgridError:
            self.stop()
            raise
        except Exception as e:
            self.stop()
            raise LabgridError(
                f"cannot reach the labgrid coordinator at {address}: {_msg(e)} (is labgrid-coordinator running there?)"
            ) from e

    def _run(self, coro: Coroutine[Any, Any, Any], timeout: float, what: str) -> Any:
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise LabgridError(
                f"labgrid coordinator at {self.address}: no answer within {timeout:g} s ({what})"
            ) from None

    @property
    def me(self) -> str:
        return f"{self.session.gethostname()}/{self.session.getuser()}"

    def _alive(self) -> None:
        if self.session.stopping.is_set():
            raise LabgridError(f"lost the connection to the labgrid coordinator at {self.address}")

    # -- on the loop -----------------------------------------------------------
    async def _acquire(self, name: str) -> bool:
        import grpc
        from labgrid.remote.client import UserError
        from labgrid.remote.generated import labgrid_coordinator_pb2 as pb2

        s = self.session
        self._alive()
        await s.sync_with_coordinator()
        place = s.places.get(name)
        if place is None:
            known = ", ".join(sorted(s.places)) or "none"
            raise LabgridError(
                f"labgrid place {name!r} does not exist on the coordinator at {self.address} (places: {known})"
            )
        if place.acquired:
            if place.acquired == self.me:
                return False  # ours already (labgrid-client acquire): use it, leave it to its owner
            raise LabgridError(f"labgrid place {name} is already acquired by {place.acquired}")
        try:
            s.check_matches(place)
        except UserError as e:
            raise LabgridError(f"labgrid place {name}: {_msg(e)}: is its exporter running?") from None
        try:
            await s.stub.AcquirePlace(pb2.AcquirePlaceRequest(placename=name))
        except grpc.aio.AioRpcError as e:
            raise LabgridError(f"cannot acquire labgrid place {name}: {e.details()}") from None
        await s.sync_with_coordinator()
        return True

    async def _release(self, name: str) -> None:
        import grpc
        from labgrid.remote.generated import labgrid_coordinator_pb2 as pb2

        if self.session.stopping.is_set():
            return
        with contextlib.suppress(grpc.aio.AioRpcError):
            await self.session.stub.ReleasePlace(pb2.ReleasePlaceRequest(placename=name))
            await self.session.sync_with_coordinator()

    def _port_now(self, name: str) -> tuple[str | None, str]:
        """(URL, "") or (None, why not yet) for the place's serial port; LabgridError when it cannot come."""
        s = self.session
        self._alive()
        place = s.places.get(name)
        if place is None:
            raise LabgridError(f"labgrid place {name} was deleted on the coordinator at {self.address}")
        if place.acquired != self.me and self.me not in place.allowed:
            raise LabgridError(f"labgrid place {name} is no longer acquired by {self.me} (now: {place.acquired})")
        ports = [p for p in place.acquired_resources if p[2] == SERIAL_CLASS]
        if not ports:
            have = ", ".join("/".join(p) for p in place.acquired_resources) or "none"
            raise LabgridError(
                f"labgrid place {name} has no {SERIAL_CLASS} (its resources: {have}); "
                "export the board's RawSerialPort or USBSerialPort and add-match it to the place"
            )
        if len(ports) > 1:
            raise LabgridError(
                f"labgrid place {name} has {len(ports)} serial ports ({', '.join('/'.join(p) for p in ports)}); "
                "give the board's console a place of its own"
            )
        exporter, group, _cls, rname = ports[0]
        where = f"{exporter}/{group}/{rname}"
        entry = s.resources.get(exporter, {}).get(group, {}).get(rname)
        data: dict[str, Any] = entry.data if entry is not None else {}  # {} once the exporter deleted it
        params: dict[str, Any] = data.get("params") or {}
        extra: dict[str, Any] = params.get("extra") or {}
        if not data.get("avail"):
            path = extra.get("path")
            raise LabgridError(
                f"serial port {where}{' (' + path + ')' if path else ''} of labgrid place {name} is not available: "
                "its exporter is offline, or the port moved on the exporter's machine"
            )
        if extra.get("proxy_required"):
            raise LabgridError(f"serial port {where} of labgrid place {name} is reachable only through an SSH proxy")
        host, port = params.get("host"), params.get("port")
        if not port:
            return None, f"labgrid exporter {exporter} did not start ser2net for {where} (place {name})"
        return f"rfc2217://{host}:{port}{URL_OPTIONS}", ""

    async def _port(self, name: str, timeout: float) -> str:
        deadline = self.loop.time() + timeout
        while True:
            url, why = self._port_now(name)
            if url:
                return url
            if self.loop.time() > deadline:
                raise LabgridError(f"{why} (waited {timeout:g} s)")
            await asyncio.sleep(POLL_S)

    # -- from any thread ---------------------------------------------------------
    def acquire(self, name: str) -> bool:
        return bool(self._run(self._acquire(name), CONNECT_TIMEOUT, f"acquiring place {name}"))

    def release(self, name: str) -> None:
        with contextlib.suppress(LabgridError):
            self._run(self._release(name), CONNECT_TIMEOUT, f"releasing place {name}")

    def url(self, name: str, timeout: float = PORT_TIMEOUT) -> str:
        return str(self._run(self._port(name, timeout), timeout + CONNECT_TIMEOUT, f"the serial port of {name}"))

    async def _view(self) -> tuple[dict[str, str | None], set[str]]:
        self._alive()
        await self.session.sync_with_coordinator()
        owners = {n: p.acquired for n, p in self.session.places.items()}
        avail = {
            f"{e}/{g}/{r.data.get('cls')}/{n}"
            for e, groups in self.session.resources.items()
            for g, rs in groups.items()
            for n, r in rs.items()
            if r.data.get("avail")
        }
        return owners, avail

    def view(self) -> tuple[dict[str, str | None], set[str]]:
        return self._run(self._view(), CONNECT_TIMEOUT, "places and resources")  # type: ignore[no-any-return]

    def stop(self) -> None:
        async def close() -> None:
            session = getattr(self, "session", None)
            if session is not None:
                with contextlib.suppress(Exception):
                    await session.stop()
                    await session.close()

        if self.loop.is_running():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(close(), self.loop).result(5)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)


# -- process-wide --------------------------------------------------------------
def _on_signal(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)  # finally blocks and atexit run: the place is released


def _install_hooks() -> None:
    global _hooks_installed
    if _hooks_installed:
        return
    _hooks_installed = True
    atexit.register(release_all)
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(sig) == signal.SIG_DFL:
                signal.signal(sig, _on_signal)
        # SIGINT: Python's default raises KeyboardInterrupt, which unwinds to atexit.


def _get_client(coordinator: str | None) -> _Client:
    global _client
    addr = coordinator_address(coordinator)
    with _lock:
        if _client is not None and _client.session.stopping.is_set():
            _client.stop()
            _client = None
            _held.clear()
        if _client is None:
            _install_hooks()
            _client = _Client(addr)
        elif _client.address != addr:
            raise LabgridError(f"one labgrid coordinator per process: already using {_client.address}, not {addr}")
        return _client


def resolve(spec: str, coordinator: str | None = None, timeout: float = PORT_TIMEOUT) -> str:
    """A serial URL for ``spec``: ``labgrid:PLACE`` becomes the place's current RFC 2217 URL
    (acquiring the place on first use); anything else is returned as it is."""
    if not is_place(spec):
        return spec
    name = place_name(spec)
    client = _get_client(coordinator)
    with _lock:
        fresh = name not in _held
        if fresh:
            _held[name] = client.acquire(name)
    try:
        return client.url(name, timeout)
    except BaseException:
        if fresh:
            release(name)
        raise


def release(name: str) -> None:
    """Release ``name`` if this process acquired it; forget it either way."""
    with _lock:
        mine = _held.pop(name, False)
        client = _client
    if mine and client is not None:
        client.release(name)


def release_all() -> None:
    global _client
    with _lock:
        names = list(_held)
    for name in names:
        release(name)
    with _lock:
        client, _client = _client, None
    if client is not None:
        client.stop()


def held() -> dict[str, bool]:
    """Places in use by this process: name -> acquired by it (else by its user before)."""
    with _lock:
        return dict(_held)


def coordinator_view(coordinator: str | None = None) -> tuple[dict[str, str | None], set[str]]:
    """What the coordinator says now: {place: acquired by "host/user" or None} and the
    available resources as "exporter/group/class/name"."""
    return _get_client(coordinator).view()


@contextlib.contextmanager
def acquired_place(name: str, coordinator: str | None = None, timeout: float = PORT_TIMEOUT) -> Iterator[str]:
    """Acquire ``name``, yield its serial port URL, release it (also on errors)."""
    try:
        yield resolve(PREFIX + name, coordinator, timeout)
    finally:
        release(name)


# -- command line ------------------------------------------------------------------
COORDINATOR_HELP = f"labgrid coordinator HOST:PORT for a labgrid:PLACE device (default: ${ENV_COORDINATOR})"
# labgrid (26.0.1) starts ser2net with its defaults: chardelay on (ser2net waits for
# a pause on the serial line before forwarding) and no tcp(nodelay) (the harness's
# TCP_QUICKACK offsets that). benchmarks/labgrid_serial.py, one run on loopback.
SERIAL_NOTE = (
    "serial through labgrid's ser2net (RFC 2217, chardelay on): the serial hop includes ser2net's "
    "wait for a pause on the line (a ping round trip: p50 ~3.5 ms, ~0.1 ms on a local pty)"
)


def add_coordinator_option(p: Any) -> None:
    p.add_argument("--lg-coordinator", default=None, metavar="HOST:PORT", help=COORDINATOR_HELP)


def serial_note(spec: str) -> str | None:
    """What a report says about a serial hop measured through a labgrid place."""
    return SERIAL_NOTE if is_place(spec) else None
