"""A labgrid lab on loopback: a coordinator and an exporter serving local serial ports.

For tests and benchmarks, and for trying ``--device labgrid:PLACE`` on one
machine. What it works around (labgrid 26.0.1, ser2net 4.3.11):

- the exporter exports a ``RawSerialPort`` (a ``USBSerialPort`` needs udev)
  whose path must start with ``/dev/``: a pty is linked there (root only);
- the exporter's ser2net listens on every interface: here a ``ser2net`` shim
  first on the exporter's PATH runs the real one on 127.0.0.1 only and records
  its pid, so ser2net children that outlive a killed exporter are ended too;
- a stopped coordinator makes the exporter exit (code 100): the coordinator
  starts first, and the exporter once the coordinator listens.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from . import labgrid_place

SER2NET_SHIM = """#!/bin/sh
# ser2net on loopback only, its pid recorded (written by lightctl's labgrid lab)
echo $$ >> "{pids}"
for a in "$@"; do
  case "$a" in
    *"accepter: telnet(rfc2217"*",tcp,"*) a=$(printf '%s' "$a" | sed 's/,tcp,\\([0-9]\\)/,tcp,127.0.0.1,\\1/');;
  esac
  set -- "$@" "$a"; shift
done
exec "{real}" "$@"
"""


def find_ser2net() -> str | None:
    return shutil.which("ser2net") or next((p for p in ("/usr/sbin/ser2net",) if Path(p).exists()), None)


def labgrid_tool(name: str) -> str:
    """A labgrid command installed beside this Python (the venv's bin), else on PATH."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} not found: pip install 'lightctl[labgrid]'")
    return found


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(
    cond: Callable[[], object],
    timeout: float,
    what: str,
    proc: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> object:
    """Poll ``cond`` until it is true; fail naming ``what`` (or the process that died first)."""
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-800:] if log else ""
            raise RuntimeError(f"{what}: the process exited ({proc.returncode}) first: {tail}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:g} s")
        time.sleep(0.05)


def _stop(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


class LocalLab:
    """``labgrid-coordinator`` and one ``labgrid-exporter`` on 127.0.0.1, in ``workdir``.

    ``export(group, pty)`` links a pty to ``/dev/lightctl-lg-*`` and adds it as a
    ``RawSerialPort``; ``start_exporter()`` then exports every group;
    ``create_place(name, group)`` makes a place matching that group's serial port.
    """

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.tag = secrets.token_hex(3)
        self.exporter_name = f"lightctl-lab-{self.tag}"
        self.address = f"127.0.0.1:{free_tcp_port()}"
        self.links: dict[str, Path] = {}
        self.coordinator: subprocess.Popen[bytes] | None = None
        self.exporter: subprocess.Popen[bytes] | None = None
        self.exporter_starts = 0
        real = find_ser2net()
        if real is None:
            raise FileNotFoundError("ser2net is not installed (apt-get install ser2net)")
        self.shim_dir = workdir / "shim"
        self.shim_dir.mkdir(parents=True, exist_ok=True)
        self.pids_file = workdir / "ser2net.pids"
        shim = self.shim_dir / "ser2net"
        shim.write_text(SER2NET_SHIM.format(pids=self.pids_file, real=real))
        shim.chmod(0o755)

    # -- processes -----------------------------------------------------------
    def _spawn(self, cmd: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        with log.open("ab") as f:
            return subprocess.Popen(
                cmd, cwd=self.workdir, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
            )

    def start_coordinator(self, timeout: float = 20.0) -> None:
        log = self.workdir / "coordinator.log"
        self.coordinator = self._spawn([labgrid_tool("labgrid-coordinator"), "-l", self.address], log)
        host, port = self.address.rsplit(":", 1)

        def listening() -> bool:
            try:
                socket.create_connection((host, int(port)), 0.5).close()
                return True
            except OSError:
                return False

        _wait(listening, timeout, f"labgrid-coordinator listening on {self.address}", self.coordinator, log)

    def export(self, group: str, pty: str) -> Path:
        link = Path(f"/dev/lightctl-lg-{self.tag}-{group}")
        with contextlib.suppress(FileNotFoundError):
            link.unlink()
        link.symlink_to(pty)
        self.links[group] = link
        return link

    def start_exporter(self, timeout: float = 20.0) -> None:
        conf = self.workdir / "exporter.yaml"
        conf.write_text(
            "".join(f"{g}:\n  RawSerialPort:\n    port: {link}\n    speed: 115200\n" for g, link in self.links.items())
        )
        env = dict(os.environ, PATH=f"{self.shim_dir}{os.pathsep}{os.environ.get('PATH', '')}")
        cmd = [labgrid_tool("labgrid-exporter"), "-c", self.address, "-n", self.exporter_name]
        cmd += ["--hostname", "127.0.0.1", str(conf)]
        self.exporter_starts += 1
        log = self.workdir / f"exporter-{self.exporter_starts}.log"
        self.exporter = self._spawn(cmd, log, env)
        want = {self.serial_resource(g) for g in self.links}
        _wait(
            lambda: want <= labgrid_place.coordinator_view(self.address)[1],
            timeout,
            f"labgrid exporter {self.exporter_name} offering {', '.join(sorted(want))}",
            self.exporter,
            log,
        )

    def stop_exporter(self, sig: int = signal.SIGTERM) -> None:
        _stop(self.exporter, sig)
        self.exporter = None

    def serial_resource(self, group: str) -> str:
        return f"{self.exporter_name}/{group}/NetworkSerialPort/RawSerialPort"

    def client(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """``labgrid-client -x COORDINATOR ARGS``."""
        return subprocess.run(
            [labgrid_tool("labgrid-client"), "-x", self.address, *args],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
            env=env,
        )

    def create_place(self, name: str, group: str) -> None:
        match = f"{self.exporter_name}/{group}/NetworkSerialPort"
        for args in (("-p", name, "create"), ("-p", name, "add-match", match)):
            r = self.client(*args)
            if r.returncode != 0:
                raise RuntimeError(f"labgrid-client {' '.join(args)} failed: {(r.stderr or r.stdout).strip()}")

    def live_ser2net(self) -> list[int]:
        """ser2net processes the exporter started that still run."""
        pids = []
        text = self.pids_file.read_text() if self.pids_file.exists() else ""
        for line in text.split():
            pid = int(line)
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"ser2net" in cmdline and b"-Y" in cmdline:
                pids.append(pid)
        return pids

    def stop(self) -> None:
        """End the exporter, the coordinator and every ser2net they left; remove the /dev links."""
        labgrid_place.release_all()  # this process's session, before its coordinator goes
        self.stop_exporter()
        _stop(self.coordinator)
        self.coordinator = None
        for pid in self.live_ser2net():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        for link in self.links.values():
            with contextlib.suppress(FileNotFoundError):
                link.unlink()
