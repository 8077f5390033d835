"""MQTT broker provisioning for the host harness.

The harness needs an MQTT broker.  :func:`start_broker` supplies one from one
of three sources:

* ``external``  -- an existing broker given by URL
  (``mqtt://[user:pass@]host[:port]`` or ``mqtts://...``); nothing is started.
* ``mosquitto`` -- a ``mosquitto`` subprocess on a free loopback port, with a
  generated config (``set_tcp_nodelay true`` for low latency) and a log file
  that is quoted in error messages.
* ``amqtt``     -- the pure-Python amqtt broker, embedded in this process and
  run on its own asyncio event loop in a background thread.

Example::

    with start_broker() as broker:          # mosquitto if installed, else amqtt
        print(broker.describe())
        client.connect(broker.info.host, broker.info.port)

``BrokerInfo.url`` contains the password (if any) so that it can be handed
on to something that has to connect; use :meth:`BrokerInfo.redacted_url`, or
``str(info)`` / ``repr(info)``, for anything that is displayed or logged.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import errno
import functools
import logging
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Literal, Self
from urllib.parse import quote, unquote, urlsplit

if TYPE_CHECKING:
    from amqtt.broker import Broker as _AmqttBroker
    from amqtt.session import Session as _AmqttSession

__all__ = [
    "EMBEDDED_KINDS",
    "AmqttBroker",
    "BrokerInfo",
    "ExternalBroker",
    "MosquittoBroker",
    "RunningBroker",
    "find_mosquitto",
    "free_port",
    "mosquitto_version",
    "parse_broker_url",
    "start_broker",
]

log = logging.getLogger(__name__)

KIND_EXTERNAL: Final = "external"
KIND_MOSQUITTO: Final = "mosquitto"
KIND_AMQTT: Final = "amqtt"
#: Values of ``url``/``prefer`` that select a broker started by the harness.
EMBEDDED_KINDS: Final = (KIND_MOSQUITTO, KIND_AMQTT)

LOOPBACK: Final = "127.0.0.1"
DEFAULT_PORTS: Final = {"mqtt": 1883, "mqtts": 8883}

#: Seconds to wait for a started broker to accept TCP connections.
START_TIMEOUT: Final = 10.0
#: Seconds to wait for a broker to stop before escalating (kill / give up).
STOP_TIMEOUT: Final = 5.0
#: Interval for polling a port while waiting for a broker to listen.
_POLL_INTERVAL: Final = 0.02
#: Lines of broker log quoted in error messages.
_LOG_TAIL_LINES: Final = 25

# Where distributions put mosquitto when it is not on a normal user's PATH.
_MOSQUITTO_EXTRA_DIRS: Final = (
    "/usr/sbin",
    "/usr/local/sbin",
    "/opt/homebrew/sbin",
    "/usr/local/opt/mosquitto/sbin",
)


# --------------------------------------------------------------------------
# BrokerInfo and URL parsing
# --------------------------------------------------------------------------


def _format_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _build_url(scheme: str, host: str, port: int, username: str | None, password: str | None, *, redact: bool) -> str:
    userinfo = ""
    if username is not None:
        userinfo = quote(username, safe="")
        if password is not None:
            userinfo += ":" + ("***" if redact else quote(password, safe=""))
        userinfo += "@"
    return f"{scheme}://{userinfo}{_format_host(host)}:{port}"


_RAW_PASSWORD_RE = re.compile(r"^(?P<head>[^:/?#]*://[^@/?#:]*:)[^@]*@")


def _redact_raw(url: str) -> str:
    """Best-effort password redaction for a URL that may not even parse."""
    return _RAW_PASSWORD_RE.sub(r"\g<head>***@", url.strip())


@dataclasses.dataclass(frozen=True, repr=False)
class BrokerInfo:
    """How to reach a broker.

    ``url`` is the normalised connect URL and *includes the password* when
    there is one; ``repr()``/``str()`` and :meth:`redacted_url` never do.
    """

    kind: str
    host: str
    port: int
    username: str | None
    password: str | None
    tls: bool
    url: str

    @property
    def scheme(self) -> str:
        return "mqtts" if self.tls else "mqtt"

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)``, e.g. for ``socket.create_connection``."""
        return (self.host, self.port)

    @property
    def embedded(self) -> bool:
        """True when the harness started (and owns) this broker."""
        return self.kind != KIND_EXTERNAL

    def redacted_url(self) -> str:
        """The URL with the password (if any) replaced by ``***``."""
        return _build_url(self.scheme, self.host, self.port, self.username, self.password, redact=True)

    def __str__(self) -> str:
        return self.redacted_url()

    def __repr__(self) -> str:
        password = None if self.password is None else "***"
        return (
            f"BrokerInfo(kind={self.kind!r}, host={self.host!r}, port={self.port!r}, "
            f"username={self.username!r}, password={password!r}, tls={self.tls!r}, "
            f"url={self.redacted_url()!r})"
        )

    @classmethod
    def local(
        cls,
        kind: str,
        port: int,
        host: str = LOOPBACK,
        *,
        username: str | None = None,
        password: str | None = None,
        tls: bool = False,
    ) -> BrokerInfo:
        """Info for a broker started by the harness (anonymous plain TCP unless told)."""
        return cls(
            kind=kind,
            host=host,
            port=port,
            username=username,
            password=password,
            tls=tls,
            url=_build_url("mqtts" if tls else "mqtt", host, port, username, password, redact=False),
        )


def parse_broker_url(url: str) -> BrokerInfo:
    """Parse ``mqtt://[user[:pass]@]host[:port]`` or ``mqtts://...``.

    The default port is 1883 for ``mqtt`` and 8883 for ``mqtts``.  User name
    and password are percent-decoded (encode ``@ : / # ?`` in them).  A single
    trailing ``/`` is tolerated; any other path, query or fragment is an
    error.  Raises :class:`ValueError` with a message that never contains the
    password.
    """
    if not isinstance(url, str) or not url.strip():
        raise ValueError("broker URL is empty; expected mqtt://[user:pass@]host[:port] or mqtts://...")
    raw = url.strip()
    shown = _redact_raw(raw)
    if "://" not in raw:
        raise ValueError(
            f"invalid broker URL {shown!r}: expected mqtt://[user:pass@]host[:port] or mqtts://... "
            f"(or one of {', '.join(EMBEDDED_KINDS)} to start a local broker)"
        )
    try:
        parts = urlsplit(raw)
    except ValueError as exc:
        raise ValueError(f"invalid broker URL {shown!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ValueError(f"unsupported scheme {parts.scheme!r} in broker URL {shown!r}: expected mqtt:// or mqtts://")
    host = parts.hostname
    if not host:
        raise ValueError(f"broker URL {shown!r} has no host name")
    try:
        explicit_port = parts.port
    except ValueError:
        explicit_port = 0
    if explicit_port is None:
        port = DEFAULT_PORTS[scheme]
    elif 1 <= explicit_port <= 65535:
        port = explicit_port
    else:
        port_text = parts.netloc.rpartition(":")[2]
        raise ValueError(f"invalid port {port_text!r} in broker URL {shown!r}: must be an integer 1-65535")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(
            f"broker URL {shown!r} has an unexpected path, query or fragment; "
            "percent-encode '/', '?' and '#' in the user name or password"
        )
    username = None if parts.username is None else unquote(parts.username)
    password = None if parts.password is None else unquote(parts.password)
    if password is not None and not username:
        raise ValueError(f"broker URL {shown!r} has a password but no user name")
    return BrokerInfo(
        kind=KIND_EXTERNAL,
        host=host,
        port=port,
        username=username,
        password=password,
        tls=scheme == "mqtts",
        url=_build_url(scheme, host, port, username, password, redact=False),
    )


# --------------------------------------------------------------------------
# Socket helpers
# --------------------------------------------------------------------------


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port on ``host`` that is free right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _accepts_connection(host: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=max(timeout, 0.01)):
            return True
    except OSError:
        return False


_WaitResult = Literal["listening", "died", "timeout"]


def _wait_for_listen(host: str, port: int, deadline: float, died: Callable[[], bool]) -> _WaitResult:
    """Poll until ``host:port`` accepts a TCP connection, ``died()`` or the deadline."""
    while True:
        if died():
            return "died"
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return "timeout"
        if _accepts_connection(host, port, min(0.5, remaining)):
            # The thing we probed might be someone else who grabbed the port.
            return "died" if died() else "listening"
        time.sleep(min(_POLL_INTERVAL, max(deadline - time.monotonic(), 0)))


# --------------------------------------------------------------------------
# RunningBroker
# --------------------------------------------------------------------------


class RunningBroker(ABC):
    """A broker the harness can use; stop it when done (or use ``with``)."""

    info: BrokerInfo

    @property
    def kind(self) -> str:
        return self.info.kind

    @property
    @abstractmethod
    def running(self) -> bool:
        """True while the broker is (believed to be) serving."""

    @abstractmethod
    def describe(self) -> str:
        """One human-readable line, safe to log (no password)."""

    @abstractmethod
    def stop(self) -> None:
        """Stop the broker and release its resources.  Idempotent."""

    @abstractmethod
    def restart(self) -> None:
        """Stop and start again on the same host and port."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<{type(self).__name__} {state} {self.info.redacted_url()}>"


class ExternalBroker(RunningBroker):
    """A broker somebody else runs; the harness only knows its URL."""

    def __init__(self, info: BrokerInfo) -> None:
        self.info = info

    @property
    def running(self) -> bool:
        return True

    def describe(self) -> str:
        return f"external broker {self.info.redacted_url()}"

    def stop(self) -> None:
        """Nothing to do: the harness does not own an external broker."""

    def restart(self) -> None:
        raise RuntimeError(
            f"cannot restart external broker {self.info.redacted_url()}: the harness did not start it "
            f"(use --broker {KIND_MOSQUITTO} or --broker {KIND_AMQTT} for broker-restart tests)"
        )


# --------------------------------------------------------------------------
# mosquitto subprocess
# --------------------------------------------------------------------------


def find_mosquitto(path: str | None = None) -> str | None:
    """Absolute path of the mosquitto executable, or None if not found.

    ``path`` may be a file path or a command name.  Without it, ``PATH`` is
    searched and then the usual sbin directories (Debian installs mosquitto
    as ``/usr/sbin/mosquitto``, which is not on a normal user's ``PATH``).
    """
    if path is not None:
        return shutil.which(path)
    return shutil.which("mosquitto") or shutil.which("mosquitto", path=os.pathsep.join(_MOSQUITTO_EXTRA_DIRS))


@functools.lru_cache(maxsize=8)
def mosquitto_version(executable: str) -> str | None:
    """Version from the first line of ``mosquitto -h`` (None if that fails)."""
    try:
        proc = subprocess.run([executable, "-h"], stdin=subprocess.DEVNULL, capture_output=True, timeout=3, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    first_line = (proc.stdout or proc.stderr).decode(errors="replace").strip().splitlines()[:1]
    match = re.search(r"version\s+(\S+)", first_line[0]) if first_line else None
    return match.group(1) if match else None


def _tail(path: Path, lines: int = _LOG_TAIL_LINES, offset: int = 0) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except OSError:
        return ""
    return "\n".join(data.decode(errors="replace").rstrip().splitlines()[-lines:])


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


@dataclasses.dataclass
class _ProcState:
    """What must be cleaned up even if a MosquittoBroker is just dropped."""

    proc: subprocess.Popen[bytes] | None = None
    tmpdir: Path | None = None


def _terminate(proc: subprocess.Popen[bytes], timeout: float) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log.warning("mosquitto pid %d ignored SIGTERM for %.1fs; killing it", proc.pid, timeout)
            proc.kill()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log.error("mosquitto pid %d still alive %.1fs after SIGKILL", proc.pid, timeout)


def _cleanup_proc_state(state: _ProcState) -> None:
    if state.proc is not None:
        _terminate(state.proc, STOP_TIMEOUT)
        state.proc = None
    if state.tmpdir is not None:
        shutil.rmtree(state.tmpdir, ignore_errors=True)
        state.tmpdir = None


class MosquittoBroker(RunningBroker):
    """mosquitto as a subprocess on a loopback port, configured for the harness."""

    LOG_NAME: Final = "mosquitto.log"
    OUTPUT_NAME: Final = "mosquitto.out"
    CONF_NAME: Final = "mosquitto.conf"

    def __init__(
        self,
        executable: str,
        *,
        port: int | None = None,
        start_timeout: float = START_TIMEOUT,
        stop_timeout: float = STOP_TIMEOUT,
        extra_config: Sequence[str] = (),
        tls: bool = False,
        username: str | None = None,
        password: str | None = None,
        allow_anonymous: bool = True,
    ) -> None:
        """``extra_config``: mosquitto.conf lines appended after the listener
        (so ``certfile``/``keyfile``/``cafile``/``require_certificate`` apply to
        it; ``password_file``, ``acl_file`` ...). ``tls``: the listener speaks
        TLS (give its files in ``extra_config``). ``username``/``password``: the
        credentials put in :attr:`info` for the harness's clients."""
        self.executable = executable
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.extra_config = list(extra_config)
        self.tls = tls
        self.allow_anonymous = allow_anonymous
        self._credentials = (username, password)
        self._port = port
        self._started_once = False
        self._state = _ProcState()
        # Kill the subprocess at interpreter exit / garbage collection.
        self._finalizer = weakref.finalize(self, _cleanup_proc_state, self._state)
        self.info = self._info(port or 0)

    def _info(self, port: int) -> BrokerInfo:
        user, password = self._credentials
        return BrokerInfo.local(KIND_MOSQUITTO, port, username=user, password=password, tls=self.tls)

    # -- introspection ----------------------------------------------------

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        return self._state.proc

    @property
    def tmpdir(self) -> Path | None:
        return self._state.tmpdir

    @property
    def log_path(self) -> Path | None:
        return None if self._state.tmpdir is None else self._state.tmpdir / self.LOG_NAME

    @property
    def running(self) -> bool:
        return self._state.proc is not None and self._state.proc.poll() is None

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """Last lines of mosquitto's log and of its stdout/stderr."""
        if self._state.tmpdir is None:
            return ""
        return self._combined_tail(lines, 0, 0)

    def describe(self) -> str:
        version = mosquitto_version(self.executable)
        name = f"mosquitto {version}" if version else "mosquitto"
        return f"{name} on {self.info.redacted_url()}"

    # -- lifecycle ----------------------------------------------------------

    def start(self) -> Self:
        """Start mosquitto and wait until its port accepts connections.

        The first start picks a free port unless one was given; later starts
        (see :meth:`restart`) reuse it.  Raises RuntimeError on failure.
        """
        if self.running:
            raise RuntimeError(f"{self.describe()} is already running")
        if self._state.tmpdir is None:
            self._state.tmpdir = Path(tempfile.mkdtemp(prefix="lightctl-mosquitto-"))
        fixed_port = self._port
        deadline = time.monotonic() + self.start_timeout
        try:
            while True:
                port = fixed_port if fixed_port is not None else free_port()
                if self._launch(port, deadline):
                    break
                # Port in use: somebody grabbed our free port (pick another), or
                # the old socket is still being released after a restart (retry).
                time.sleep(min(0.1, max(deadline - time.monotonic(), 0)))
        except BaseException:
            if not self._started_once:  # nothing worth keeping; a failed restart keeps its log
                _cleanup_proc_state(self._state)
            raise
        self._port = port
        self._started_once = True
        self.info = self._info(port)
        pid = self._state.proc.pid if self._state.proc is not None else None
        log.info("started %s (pid %s, dir %s)", self.describe(), pid, self._state.tmpdir)
        return self

    def stop(self) -> None:
        """Terminate mosquitto (kill it if it lingers) and delete its temp dir."""
        self._stop_process()
        _cleanup_proc_state(self._state)

    def restart(self) -> None:
        """Stop mosquitto and start it again on the same port (state is lost)."""
        if not self._started_once:
            raise RuntimeError("mosquitto broker was never started; call start() first")
        self._stop_process()
        self.start()

    # -- internals ------------------------------------------------------------

    def _stop_process(self) -> None:
        proc = self._state.proc
        if proc is not None:
            _terminate(proc, self.stop_timeout)
            self._state.proc = None
            log.info("stopped mosquitto on %s (exit code %s)", self.info.redacted_url(), proc.returncode)

    def _write_config(self, port: int) -> Path:
        assert self._state.tmpdir is not None
        tmpdir = self._state.tmpdir
        lines = [
            "# generated by lightctl host_harness.broker",
            f"listener {port} {LOOPBACK}",
            f"allow_anonymous {'true' if self.allow_anonymous else 'false'}",
            "persistence false",
            # Send small packets at once: the harness measures latency.
            "set_tcp_nodelay true",
            f"log_dest file {tmpdir / self.LOG_NAME}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "log_timestamp true",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
            "connection_messages true",
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            # As root, mosquitto would switch to user "mosquitto", which cannot
            # write the log file in our private temp dir.
            lines.append("user root")
        lines += self.extra_config
        conf = tmpdir / self.CONF_NAME
        conf.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return conf

    def _combined_tail(self, lines: int, log_offset: int, out_offset: int) -> str:
        assert self._state.tmpdir is not None
        parts = []
        for name, offset in ((self.LOG_NAME, log_offset), (self.OUTPUT_NAME, out_offset)):
            text = _tail(self._state.tmpdir / name, lines, offset)
            if text:
                parts.append(f"--- {name} ---\n{text}")
        return "\n".join(parts) if parts else "(mosquitto wrote no log output)"

    def _launch(self, port: int, deadline: float) -> bool:
        """Start one mosquitto process; True once it listens on ``port``.

        False if it exited because the port was taken and there is time left
        to try again; RuntimeError otherwise.
        """
        assert self._state.tmpdir is not None
        tmpdir = self._state.tmpdir
        conf = self._write_config(port)
        log_offset = _file_size(tmpdir / self.LOG_NAME)
        out_offset = _file_size(tmpdir / self.OUTPUT_NAME)
        with (tmpdir / self.OUTPUT_NAME).open("ab") as out:
            proc = subprocess.Popen(
                [self.executable, "-c", str(conf)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=tmpdir,
            )
        self._state.proc = proc
        result = _wait_for_listen(LOOPBACK, port, deadline, lambda: proc.poll() is not None)
        if result == "listening":
            return True
        where = f"{LOOPBACK}:{port}"
        if result == "timeout":
            _terminate(proc, self.stop_timeout)
            self._state.proc = None
            raise RuntimeError(
                f"timed out after {self.start_timeout:.1f}s waiting for mosquitto ({self.executable}) "
                f"to accept TCP connections on {where}; log tail:\n"
                f"{self._combined_tail(_LOG_TAIL_LINES, log_offset, out_offset)}"
            )
        _terminate(proc, self.stop_timeout)  # "died" may mean: someone else answered
        self._state.proc = None
        tail = self._combined_tail(_LOG_TAIL_LINES, log_offset, out_offset)
        if "Address already in use" in tail and time.monotonic() < deadline:
            log.debug("mosquitto could not bind %s (address in use); retrying", where)
            return False
        raise RuntimeError(
            f"mosquitto ({self.executable}) exited with code {proc.returncode} before listening on "
            f"{where}; log tail:\n{tail}"
        )


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

    def describe(self) -> str:
        return f"amqtt (embedded, in-process) on {self.info.redacted_url()}"

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


# --------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------


def start_broker(
    url: str | None = None,
    *,
    prefer: str | None = None,
    mosquitto_path: str | None = None,
    **mosquitto_options: Any,
) -> RunningBroker:
    """Give the harness a broker.

    * ``url`` = ``mqtt://...`` / ``mqtts://...``: use that external broker
      (nothing is started; ``stop()`` does nothing).
    * ``url`` (or ``prefer``) = ``"mosquitto"`` / ``"amqtt"``: start that kind.
    * otherwise: mosquitto if it can be found (``mosquitto_path`` or the
      ``PATH``/sbin directories), else the embedded amqtt broker.

    ``mosquitto_options`` (``extra_config``, ``tls``, ``username``,
    ``password``, ``allow_anonymous``; see :class:`MosquittoBroker`) need
    mosquitto: a broker with TLS, a password file or an ACL.

    Raises ValueError for bad arguments, RuntimeError if a broker cannot be
    started (or a forced mosquitto cannot be found).
    """
    if mosquitto_options:
        if (prefer or url or KIND_MOSQUITTO).strip().lower() != KIND_MOSQUITTO:
            raise ValueError(f"{', '.join(sorted(mosquitto_options))} need a mosquitto broker started by the harness")
        prefer, url = KIND_MOSQUITTO, None
    wanted: str | None = None
    if prefer is not None:
        wanted = prefer.strip().lower()
        if wanted not in EMBEDDED_KINDS:
            raise ValueError(f"prefer must be one of {', '.join(EMBEDDED_KINDS)}, not {prefer!r}")
    if url is not None:
        keyword = url.strip().lower()
        if keyword in EMBEDDED_KINDS:
            if wanted is not None and wanted != keyword:
                raise ValueError(f"conflicting broker choices: url={url!r} but prefer={prefer!r}")
            wanted = keyword
        else:
            info = parse_broker_url(url)
            if wanted is not None:
                raise ValueError(
                    f"prefer={prefer!r} makes no sense with an external broker URL ({info.redacted_url()})"
                )
            return ExternalBroker(info)

    executable = find_mosquitto(mosquitto_path) if wanted != KIND_AMQTT else None
    if mosquitto_path is not None and executable is None and wanted != KIND_AMQTT:
        raise RuntimeError(f"mosquitto executable {mosquitto_path!r} not found or not executable")
    if wanted == KIND_MOSQUITTO and executable is None:
        raise RuntimeError(
            "mosquitto was requested but no 'mosquitto' executable was found on PATH or in "
            f"{', '.join(_MOSQUITTO_EXTRA_DIRS)}; install it or pass its path"
        )
    if executable is not None:
        return MosquittoBroker(executable, **mosquitto_options).start()
    return AmqttBroker().start()
