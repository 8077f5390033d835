"""A fault-injecting TCP proxy for MQTT links: latency, partitions, cuts, lost packets.

The harness puts a :class:`FaultProxy` between a client (the device, or the
host's paho client) and the broker to reproduce slow and broken networks::

    with FaultProxy(*broker.info.address).start() as proxy:
        dev = open_device(broker=proxy.info_for(broker.info))
        proxy.down.delay_s = 0.3           # broker -> device one-way latency
        proxy.set("both", blackhole=True)  # a partition TCP does not notice
        proxy.cut()                        # reset every connection (RST)
        proxy.drop_next_down(lambda p: (mqtt_publish_topic(p) or "").endswith("/state"))

Directions: ``"up"`` is client -> upstream (broker), ``"down"`` is
upstream -> client.  Each has its own :class:`Direction` (``proxy.up``,
``proxy.down``) whose settings may be changed at any time from any thread;
they apply to every connection, to bytes received after the change:

* ``delay_s``   -- fixed one-way latency: each chunk is delivered at
  *time received + delay*, so a delay holds every chunk that long without
  serialising chunks behind each other; the byte stream and its order are kept.
* ``jitter_s``  -- a uniform extra 0..jitter per chunk, still in order.
* ``blackhole`` -- received bytes (and a FIN) are silently dropped while it is
  on; the connection stays open.  Lifting it on a live connection may leave the
  receiver in the middle of a packet: follow it with :meth:`FaultProxy.cut`.
* ``paused``    -- received bytes are held and delivered, in order, when unpaused.
* ``drop_next(match, count)`` -- MQTT-aware: the stream is split into MQTT
  packets (fixed header + remaining-length framing, kept across chunk
  boundaries) and the next ``count`` whole packets for which ``match(packet)``
  is true are dropped.  Only meaningful on plain (non-TLS) MQTT streams.

All sockets use TCP_NODELAY, so the proxy adds no Nagle delay.  The proxy runs
an asyncio event loop in one background thread; :meth:`FaultProxy.stop` resets
all connections, closes the port and joins that thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import logging
import socket
import threading
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, Self

from host_harness.broker.info import BrokerInfo
from host_harness.core.events import WaitTimeout
from host_harness.netfault.pipe import Link, Pipe, close_socket, set_nodelay
from host_harness.netfault.settings import Direction, DropRule, Locked, PacketMatch, ProxyStats, Which, flag

log = logging.getLogger(__name__)

KIND_PROXY = "proxy"
CONNECT_TIMEOUT = 5.0
CONTROL_TIMEOUT = 5.0

# --------------------------------------------------------------------------
# The proxy
# --------------------------------------------------------------------------


def _resolve(host: str, port: int, passive: bool = False) -> tuple[int, Any]:
    flags = socket.AI_PASSIVE if passive else 0
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=flags)
    if not infos:
        raise OSError(f"cannot resolve {host!r}")
    family, _, _, _, addr = infos[0]
    return family, addr


def _with_address(url: str, host: str, port: int) -> str:
    """``url`` (scheme://[userinfo@]host:port) with another host and port."""
    scheme, _, rest = url.partition("://")
    userinfo, at, _ = rest.rpartition("@")
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{userinfo}{at}{shown}:{port}"


class FaultProxy:
    """A TCP proxy on loopback that delays, pauses, blackholes, cuts and drops.

    ``start()`` binds the port (``.port``) and starts the proxy thread;
    ``stop()`` (or leaving a ``with`` block) resets every connection, closes
    the port and joins the thread.  Faults are set through ``proxy.up`` /
    ``proxy.down`` (see :class:`Direction`), :meth:`set`, :meth:`cut` and the
    ``drop_next_*`` methods, from any thread.
    """

    def __init__(
        self, upstream_host: str, upstream_port: int, listen_host: str = "127.0.0.1", listen_port: int = 0
    ) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.listen_host = listen_host
        self.listen_port = listen_port
        self.up = Direction("up", self._wake_all)
        self.down = Direction("down", self._wake_all)
        self._lock = threading.Lock()
        self._refuse = False
        self._accepted = self._refused = self._failed = self._cut = 0
        self._port: int | None = None
        self._listener: socket.socket | None = None
        self._upstream_addr: tuple[int, Any] | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._links: set[Link] = set()
        self._ready = threading.Event()
        self._error: BaseException | None = None

    # -- lifecycle --------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the proxy is not started; call start() first")
        return self._port

    @property
    def address(self) -> tuple[str, int]:
        return (self.listen_host, self.port)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> Self:
        if self._thread is not None:
            raise RuntimeError("the proxy is already started")
        self._upstream_addr = _resolve(self.upstream_host, self.upstream_port)
        family, addr = _resolve(self.listen_host, self.listen_port, passive=True)
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(addr)
            listener.listen(64)
            listener.setblocking(False)
        except BaseException:
            listener.close()
            raise
        self._listener = listener
        self._port = int(listener.getsockname()[1])
        self._ready.clear()
        self._error = None
        self._thread = threading.Thread(target=self._run, name=f"fault-proxy:{self._port}", daemon=True)
        self._thread.start()
        if not self._ready.wait(CONTROL_TIMEOUT) or self._error is not None:
            error = self._error
            self.stop()
            raise RuntimeError(f"fault proxy on port {self._port} did not start: {error}") from error
        log.info("fault proxy %s:%d -> %s:%d", self.listen_host, self._port, self.upstream_host, self.upstream_port)
        return self

    def stop(self) -> None:
        """Reset every connection, close the port and join the thread.  Idempotent."""
        thread, loop, stopping = self._thread, self._loop, self._stopping
        if thread is None:
            return
        if thread is threading.current_thread():
            raise RuntimeError("stop() called from the proxy's own thread")
        if loop is not None and stopping is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(stopping.set)
        thread.join(CONTROL_TIMEOUT)
        if thread.is_alive():
            raise RuntimeError(f"timed out after {CONTROL_TIMEOUT:g} s waiting for thread {thread.name} to exit")
        self._thread = self._loop = self._stopping = None
        if self._listener is not None:  # the thread normally closes it
            self._listener.close()
            self._listener = None

    def __enter__(self) -> Self:
        return self if self._thread is not None else self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = f"{self.listen_host}:{self._port}" if self._port is not None else "unbound"
        state = "running" if self.running else "stopped"
        return f"<FaultProxy {state} {where} -> {self.upstream_host}:{self.upstream_port}>"

    def info_for(self, broker: BrokerInfo) -> BrokerInfo:
        """``broker``'s info (credentials, TLS flag) pointing at this proxy."""
        return dataclasses.replace(
            broker,
            kind=KIND_PROXY,
            host=self.listen_host,
            port=self.port,
            url=_with_address(broker.url, self.listen_host, self.port),
        )

    # -- faults -----------------------------------------------------------------
    def _directions(self, which: Which) -> tuple[Direction, ...]:
        if which == "up":
            return (self.up,)
        if which == "down":
            return (self.down,)
        if which == "both":
            return (self.up, self.down)
        raise ValueError(f"direction must be 'up', 'down' or 'both', not {which!r}")

    def set(
        self,
        which: Which = "both",
        *,
        delay_s: float | None = None,
        jitter_s: float | None = None,
        blackhole: bool | None = None,
        paused: bool | None = None,
    ) -> None:
        """Change the settings given (the others stay) of one or both directions."""
        for d in self._directions(which):
            if delay_s is not None:
                d.delay_s = delay_s
            if jitter_s is not None:
                d.jitter_s = jitter_s
            if blackhole is not None:
                d.blackhole = blackhole
            if paused is not None:
                d.paused = paused

    def clear_faults(self) -> None:
        """Back to a transparent proxy that accepts connections (counters stay)."""
        self.up.clear()
        self.down.clear()
        self.refuse = False

    def drop_next_down(self, match: PacketMatch, count: int = 1) -> DropRule:
        """Drop the next ``count`` broker -> client MQTT packets that ``match``."""
        return self.down.drop_next(match, count)

    def drop_next_up(self, match: PacketMatch, count: int = 1) -> DropRule:
        """Drop the next ``count`` client -> broker MQTT packets that ``match``."""
        return self.up.drop_next(match, count)

    refuse = Locked(flag, doc="While true, new connections are accepted and reset at once.")

    def cut(self, refuse: bool | None = None) -> int:
        """Reset (RST) every current connection on both sides; returns how many.

        New connections are still accepted, unless ``refuse`` is true (it
        stays in force until ``refuse`` is set false again).
        """
        if refuse is not None:
            self.refuse = refuse
        return self._call(self._acut())

    def stats(self) -> ProxyStats:
        with self._lock:
            return ProxyStats(
                up=self.up.stats,
                down=self.down.stats,
                connections_accepted=self._accepted,
                connections_refused=self._refused,
                connections_failed=self._failed,
                connections_active=len(self._links),
                connections_cut=self._cut,
            )

    # -- event-loop thread ------------------------------------------------------
    def _call(self, coro: Coroutine[Any, Any, int]) -> int:
        loop = self._loop
        if loop is None or not self.running:
            coro.close()
            raise RuntimeError("the proxy is not running")
        if self._thread is threading.current_thread():
            coro.close()
            raise RuntimeError("cannot wait for the proxy from its own thread")
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return future.result(CONTROL_TIMEOUT)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise WaitTimeout(f"timed out after {CONTROL_TIMEOUT:g} s waiting for the proxy to act") from None

    def _wake_all(self) -> None:
        loop = self._loop
        if loop is None:
            return

        def wake() -> None:
            for link in self._links:
                for pipe in link.pipes:
                    pipe.wake.set()

        with contextlib.suppress(RuntimeError):  # loop closed meanwhile
            loop.call_soon_threadsafe(wake)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as e:  # reported by start(), or logged
            self._error = e
            self._ready.set()
            log.exception("fault proxy thread failed")

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        listener = self._listener
        assert listener is not None
        accept = asyncio.create_task(self._accept(listener))
        self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            accept.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await accept
            listener.close()
            self._listener = None
            await self._acut(count=False)

    async def _acut(self, count: bool = True) -> int:
        links = list(self._links)
        for link in links:
            link.reset = True
            if link.task is not None:
                link.task.cancel()
        tasks = [link.task for link in links if link.task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if count:
            with self._lock:
                self._cut += len(links)
        return len(links)

    async def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                client, peer = await loop.sock_accept(listener)
            except OSError as e:  # e.g. EMFILE: keep serving the others
                log.warning("fault proxy accept failed: %s", e)
                await asyncio.sleep(0.05)
                continue
            if self.refuse:
                with self._lock:
                    self._refused += 1
                close_socket(client, reset=True)
                continue
            with self._lock:
                self._accepted += 1
            client.setblocking(False)
            set_nodelay(client)
            link = Link(client, peer)
            self._links.add(link)
            link.task = asyncio.create_task(self._serve(link))

    async def _serve(self, link: Link) -> None:
        loop = asyncio.get_running_loop()
        tasks: list[asyncio.Task[None]] = []
        try:
            assert self._upstream_addr is not None
            family, addr = self._upstream_addr
            upstream = socket.socket(family, socket.SOCK_STREAM)
            link.upstream = upstream
            upstream.setblocking(False)
            set_nodelay(upstream)
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT):
                    await loop.sock_connect(upstream, addr)
            except (OSError, TimeoutError) as e:
                with self._lock:
                    self._failed += 1
                log.warning("fault proxy: cannot reach %s:%d: %s", self.upstream_host, self.upstream_port, e)
                return
            link.pipes = [Pipe(self.up, link.client, upstream), Pipe(self.down, upstream, link.client)]
            for pipe in link.pipes:
                tasks += [asyncio.create_task(pipe.read(loop)), asyncio.create_task(pipe.write(loop))]
            await asyncio.gather(*tasks)
            link.reset = False  # both FINs went through
        except OSError as e:
            log.debug("fault proxy connection from %s ended: %s", link.peer, e)
        except Exception:
            log.exception("fault proxy connection from %s failed", link.peer)
        finally:
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            for pipe in link.pipes:
                pipe.discard()
            close_socket(link.client, link.reset)
            if link.upstream is not None:
                close_socket(link.upstream, link.reset)
            self._links.discard(link)
