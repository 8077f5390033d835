"""A mosquitto subprocess on a free loopback port, with a generated config and a log file."""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Self

from host_harness import children
from host_harness.broker.info import KIND_MOSQUITTO, LOOPBACK, BrokerInfo
from host_harness.broker.running import START_TIMEOUT, STOP_TIMEOUT, RunningBroker, free_port, wait_for_listen

log = logging.getLogger(__name__)

_LOG_TAIL_LINES = 25

MOSQUITTO_EXTRA_DIRS = (
    "/usr/sbin",
    "/usr/local/sbin",
    "/opt/homebrew/sbin",
    "/usr/local/opt/mosquitto/sbin",
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
    return shutil.which("mosquitto") or shutil.which("mosquitto", path=os.pathsep.join(MOSQUITTO_EXTRA_DIRS))


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


#: Mosquitto 2's defaults for the settings that change latency (mosquitto.conf(5)).
STOCK_LATENCY_SETTINGS = {"max_inflight_messages": "20", "max_queued_messages": "1000"}


class MosquittoBroker(RunningBroker):
    """mosquitto as a subprocess on a loopback port.

    Its latency-relevant settings are Mosquitto's stock ones, as users run it,
    unless ``tuned``: then ``set_tcp_nodelay true`` (small packets are sent at
    once instead of waiting for the peer's ACK: Nagle's algorithm off).
    """

    LOG_NAME = "mosquitto.log"
    OUTPUT_NAME = "mosquitto.out"
    CONF_NAME = "mosquitto.conf"

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
        tuned: bool = False,
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
        self.tuned = tuned
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

    def latency_settings(self) -> dict[str, str]:
        """The settings that change latency, as this broker runs them (Mosquitto's defaults otherwise)."""
        return {"set_tcp_nodelay": "true" if self.tuned else "false (stock)", **STOCK_LATENCY_SETTINGS}

    def describe(self) -> str:
        version = mosquitto_version(self.executable)
        name = f"mosquitto {version}" if version else "mosquitto"
        name += " (tuned)" if self.tuned else " (stock settings)"
        settings = ", ".join(f"{k} {v}" for k, v in self.latency_settings().items())
        return f"{name} on {self.info.redacted_url()}; {settings}"

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
        if self.tuned:
            # Send small packets at once instead of waiting for the peer's ACK.
            lines.append("set_tcp_nodelay true")
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
            proc = children.spawn(
                [self.executable, "-c", str(conf)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=tmpdir,
            )
        self._state.proc = proc
        result = wait_for_listen(LOOPBACK, port, deadline, lambda: proc.poll() is not None)
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
