"""The pure-Python amqtt broker, embedded in this process on its own asyncio loop in a thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import functools
import importlib.metadata
import logging
import socket
import threading
import time
from typing import TYPE_CHECKING, Any, Self

from host_harness.broker.info import KIND_AMQTT, LOOPBACK, BrokerInfo
from host_harness.broker.running import START_TIMEOUT, STOP_TIMEOUT, RunningBroker, free_port

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from amqtt.broker import Broker as _AmqttBroker
    from amqtt.session import Session as _AmqttSession

# --------------------------------------------------------------------------
# amqtt, embedded
# --------------------------------------------------------------------------


def _amqtt_config(port: int) -> dict[str, Any]:
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"{LOOPBACK}:{port}"}},
        # Only anonymous auth: no $SYS publisher (it needs psutil and is
        # noisy), no packet/event logging plugins.
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }


@functools.cache
def _harness_amqtt_broker_class() -> type[_AmqttBroker]:
    """amqtt's Broker with a retained-message leak fixed (amqtt 0.12.1).

    On every CONNECT, amqtt replays the retained messages matching *every*
    topic filter that *any* client holds (and a disconnected client's filters
    linger for up to a second) to the connecting client, although it never
    subscribed to them.  Retained messages must only go to sessions that
    hold a matching subscription, as in mosquitto.
    """
    from amqtt.broker import Broker

    class HarnessAmqttBroker(Broker):
        async def _publish_retained_messages_for_subscription(
            self, subscription: tuple[str, int], session: _AmqttSession
        ) -> None:
            topic_filter = subscription[0]
            holders = self.subscriptions.get(topic_filter, ())
            if any(holder.client_id == session.client_id for holder, _qos in holders):
                await super()._publish_retained_messages_for_subscription(subscription, session)

        async def stream_connected(
            self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, listener_name: str
        ) -> None:
            # amqtt leaves Nagle on: small packets then wait ~40 ms for the
            # peer's delayed ACK. Mosquitto gets set_tcp_nodelay; so does this.
            sock = writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await super().stream_connected(reader, writer, listener_name)

    return HarnessAmqttBroker


def _is_addr_in_use(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno == errno.EADDRINUSE:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class AmqttBroker(RunningBroker):
    """amqtt running in this process, on a private event loop in a daemon thread."""

    def __init__(
        self,
        *,
        port: int | None = None,
        start_timeout: float = START_TIMEOUT,
        stop_timeout: float = STOP_TIMEOUT,
    ) -> None:
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self._port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._broker: _AmqttBroker | None = None
        self.info = BrokerInfo.local(KIND_AMQTT, port or 0)

    @property
    def thread(self) -> threading.Thread | None:
        """The thread running the broker's event loop (None when stopped)."""
        return self._thread

    @property
    def running(self) -> bool:
        return self._broker is not None and self._thread is not None and self._thread.is_alive()

    def latency_settings(self) -> dict[str, str]:
        return {"TCP_NODELAY": "on (set by the harness)"}

    def describe(self) -> str:
        try:
            version = " " + importlib.metadata.version("amqtt")
        except importlib.metadata.PackageNotFoundError:
            version = ""
        settings = ", ".join(f"{k} {v}" for k, v in self.latency_settings().items())
        return f"amqtt{version} (embedded, in-process) on {self.info.redacted_url()}; {settings}"

    def start(self) -> Self:
        """Start the event loop thread and the broker; wait until it listens."""
        if self._thread is not None:
            raise RuntimeError(f"{self.describe()} is already running")
        from amqtt.errors import BrokerError  # deferred: amqtt is slow to import

        deadline = time.monotonic() + self.start_timeout
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=self._run_loop, args=(loop,), name="amqtt-broker", daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread
        try:
            while True:
                port = self._port if self._port is not None else free_port()
                future = asyncio.run_coroutine_threadsafe(self._astart(port), loop)
                try:
                    self._broker = future.result(timeout=max(deadline - time.monotonic(), 0.01))
                except concurrent.futures.TimeoutError:
                    future.cancel()
                    raise RuntimeError(
                        f"timed out after {self.start_timeout:.1f}s waiting for the embedded amqtt broker "
                        f"to start listening on {LOOPBACK}:{port}"
                    ) from None
                except BrokerError as exc:
                    if _is_addr_in_use(exc) and time.monotonic() < deadline:
                        log.debug("amqtt could not bind %s:%d (address in use); retrying", LOOPBACK, port)
                        time.sleep(min(0.1, max(deadline - time.monotonic(), 0)))
                        continue
                    raise RuntimeError(f"embedded amqtt broker failed to start on {LOOPBACK}:{port}: {exc}") from exc
                # Broker.start() returns once asyncio.start_server() is listening,
                # so no TCP probe is needed (amqtt would log a warning for it).
                break
        except BaseException:
            self._shutdown_loop()
            raise
        self._port = port
        self.info = BrokerInfo.local(KIND_AMQTT, port)
        log.info("started %s", self.describe())
        return self

    def stop(self) -> None:
        """Shut the broker down, then its event loop and thread.  Idempotent."""
        if self._thread is None:
            return
        self._shutdown_loop()
        log.info("stopped amqtt on %s", self.info.redacted_url())

    def restart(self) -> None:
        """Stop amqtt and start a fresh instance on the same port (state is lost)."""
        if self._port is None:
            raise RuntimeError("amqtt broker was never started; call start() first")
        self.stop()
        self.start()

    # -- internals ------------------------------------------------------------

    @staticmethod
    def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                asyncio.set_event_loop(None)
                loop.close()

    @staticmethod
    async def _astart(port: int) -> _AmqttBroker:
        broker_class = _harness_amqtt_broker_class()
        broker = broker_class(_amqtt_config(port), loop=asyncio.get_running_loop())
        await broker.start()
        return broker

    async def _ashutdown(self, broker: _AmqttBroker | None) -> None:
        if broker is not None:
            try:
                async with asyncio.timeout(self.stop_timeout):
                    await broker.shutdown()
            except Exception:  # keep going: the loop must stop regardless
                log.warning("amqtt broker shutdown failed; cancelling its tasks", exc_info=True)
                # amqtt closes its listening sockets only after every session
                # closed cleanly: close them here, or the port stays taken and
                # a restart on it fails with "address already in use".
                for server in getattr(broker, "_servers", {}).values():
                    with contextlib.suppress(Exception):
                        await server.close_instance()
        # Connection handlers, keep-alive timers etc. that shutdown() left behind.
        current = asyncio.current_task()
        tasks = [task for task in asyncio.all_tasks() if task is not current]
        for task in tasks:
            task.cancel()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self.stop_timeout)
            if pending:
                log.warning("%d amqtt tasks did not finish after cancellation", len(pending))

    def _shutdown_loop(self) -> None:
        loop, thread, broker = self._loop, self._thread, self._broker
        self._loop, self._thread, self._broker = None, None, None
        if loop is None or thread is None:
            return
        if thread.is_alive() and not loop.is_closed():
            future = asyncio.run_coroutine_threadsafe(self._ashutdown(broker), loop)
            try:
                future.result(timeout=3 * self.stop_timeout)
            except concurrent.futures.TimeoutError:
                log.warning("timed out after %.1fs waiting for the amqtt broker to shut down", 3 * self.stop_timeout)
            except Exception:
                log.warning("error while shutting down the amqtt broker", exc_info=True)
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=self.stop_timeout)
        if thread.is_alive():
            raise RuntimeError(
                f"timed out after {self.stop_timeout:.1f}s waiting for the amqtt event-loop thread to exit"
            )
