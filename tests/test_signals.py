"""Nothing outlives lightctl: SIGINT, SIGTERM, two SIGINTs or SIGKILL to ``sim`` or ``run``.

Each test starts lightctl as a subprocess (in a new session, as CI or
``timeout`` would), waits until it is up, records every process it started
(the /proc parent tree), sends the signal to lightctl alone, and then checks
that every recorded process is gone and that the broker sent the device's
last will: the device's connection really closed.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from host_harness import children
from host_harness.broker.running import RunningBroker
from host_harness.broker.start import start_broker
from host_harness.core.events import Event
from host_harness.link.mqtt_client import HostMqtt

pytestmark = pytest.mark.needs_process  # runs lightctl, which spawns its own device

ENV = dict(os.environ, PYTHONIOENCODING="utf-8", PYTHONUNBUFFERED="1")
UP_TIMEOUT = 60.0
GONE_TIMEOUT = 20.0
# (signals sent one after the other; the second only once lightctl says it is stopping)
CASES = {
    "SIGINT": (signal.SIGINT,),
    "SIGTERM": (signal.SIGTERM,),
    "SIGKILL": (signal.SIGKILL,),
    "two SIGINTs": (signal.SIGINT, signal.SIGINT),
}


# -- processes -----------------------------------------------------------------
def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, start time) of ``pid`` from /proc, or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) "
    return fields[0], int(fields[1]), int(fields[19])


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def descendants(root: int) -> dict[int, tuple[int, str]]:
    """``root`` and every process below it: pid -> (start time, command line)."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit() and (st := _stat(int(d))) is not None:
            children.setdefault(st[1], []).append(int(d))
    out: dict[int, tuple[int, str]] = {}
    todo = [root]
    while todo:
        pid = todo.pop()
        st = _stat(pid)
        if st is None:
            continue
        out[pid] = (st[2], _cmdline(pid))
        todo += children.get(pid, [])
    return out


def alive(procs: dict[int, tuple[int, str]]) -> dict[int, str]:
    """The recorded processes still running (same pid and start time, not a zombie)."""
    left = {}
    for pid, (start, cmd) in procs.items():
        st = _stat(pid)
        if st is not None and st[2] == start and st[0] != "Z":
            left[pid] = cmd
    return left


def wait_all_gone(procs: dict[int, tuple[int, str]], timeout: float = GONE_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while (left := alive(procs)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, f"still running {timeout:g} s after lightctl ended: " + "; ".join(
        f"pid {pid}: {cmd}" for pid, cmd in left.items()
    )


class Output:
    """One stream of a process, read in a thread; lines awaited with a timeout."""

    def __init__(self, stream: object, name: str) -> None:
        self.name = name
        self.q: queue.Queue[str | None] = queue.Queue()
        self.lines: list[str] = []
        self._stream = stream
        threading.Thread(target=self._read, name=f"read {name}", daemon=True).start()

    def _read(self) -> None:
        for line in self._stream:  # type: ignore[attr-defined]
            self.q.put(line.rstrip("\n"))
        self.q.put(None)

    def wait_for(self, pattern: str, timeout: float = UP_TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                line = self.q.get(timeout=max(left, 0.001))
            except queue.Empty:
                line = ""
                if left <= 0:
                    raise AssertionError(
                        f"no {self.name} line matching {pattern!r} within {timeout:g} s; got:\n" + "\n".join(self.lines)
                    ) from None
                continue
            if line is None:
                raise AssertionError(
                    f"{self.name} ended without a line matching {pattern!r}:\n" + "\n".join(self.lines)
                )
            self.lines.append(line)
            if re.search(pattern, line):
                return line

    def rest(self, timeout: float = GONE_TIMEOUT) -> str:
        """Everything up to the end of the stream."""
        deadline = time.monotonic() + timeout
        while (line := self.q.get(timeout=max(deadline - time.monotonic(), 0.001))) is not None:
            self.lines.append(line)
        return "\n".join(self.lines)


class Lightctl:
    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "host_harness", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            env=env or ENV,
            start_new_session=True,
        )
        self.out = Output(self.proc.stdout, "stdout")
        self.err = Output(self.proc.stderr, "stderr")
        self.started: dict[int, tuple[int, str]] = {}

    def record(self) -> dict[int, tuple[int, str]]:
        self.started = descendants(self.proc.pid)
        assert len(self.started) > 1, f"lightctl started no process: {self.started}"
        return self.started

    def stop_with(self, signals: tuple[signal.Signals, ...]) -> int:
        self.proc.send_signal(signals[0])
        for s in signals[1:]:
            self.err.wait_for(r"lightctl: SIG\w+: stopping", GONE_TIMEOUT)  # now cleaning up
            self.proc.send_signal(s)
        return self.proc.wait(timeout=GONE_TIMEOUT)

    def close(self) -> None:
        for pid in alive(self.started) or {self.proc.pid: ""}:  # a failed test leaves nothing either
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait(timeout=GONE_TIMEOUT)


@pytest.fixture
def broker() -> Iterator[RunningBroker]:
    """An external Mosquitto (the test's, not lightctl's): it outlives lightctl and sees the last will."""
    with start_broker("mosquitto") as b:
        yield b


@pytest.fixture
def availability(broker: RunningBroker) -> Iterator[HostMqtt]:
    mq = HostMqtt(broker.info, "signals-test").connect()
    mq.subscribe("lightctl/+/availability", qos=1)
    try:
        yield mq
    finally:
        mq.close()


def _payload(e: Event) -> object:
    return e.data.get("payload")


def wait_online(mq: HostMqtt, device_id: str) -> Event:
    # By id: on a shared machine another program's device may find this broker's port.
    topic = f"lightctl/{device_id}/availability"
    return mq.log.wait_for(lambda e: e.topic == topic and _payload(e) == "online", UP_TIMEOUT, f"'online' on {topic}")


def assert_last_will(mq: HostMqtt, online: Event) -> None:
    mq.log.wait_for(
        lambda e: e.topic == online.topic and _payload(e) == "offline",
        GONE_TIMEOUT,
        f"the last will 'offline' on {online.topic}",
        online.index,
    )


# -- sim -----------------------------------------------------------------------
@pytest.mark.parametrize("case", list(CASES))
def test_sim_leaves_nothing_and_the_broker_sends_the_last_will(
    case: str, broker: RunningBroker, availability: HostMqtt
) -> None:
    url = f"mqtt://{broker.info.host}:{broker.info.port}"
    device_id = f"sig-{os.getpid()}"
    lc = Lightctl("sim", "--broker", url, "--device-id", device_id)
    try:
        lc.out.wait_for(r"device events follow")
        online = wait_online(availability, device_id)
        started = lc.record()
        code = lc.stop_with(CASES[case])
        wait_all_gone(started)
        assert_last_will(availability, online)
        if CASES[case][0] != signal.SIGKILL:
            assert code == 0, lc.err.rest()
            assert "Traceback" not in lc.err.rest()
    finally:
        lc.close()


@pytest.mark.parametrize("case", list(CASES))
def test_sim_with_its_own_broker_leaves_no_process_and_no_folder(case: str) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="signals-"))
    env = dict(ENV, TMPDIR=str(tmp))  # where lightctl makes its temporary folders
    lc = Lightctl("sim", "--broker", "mosquitto", env=env)
    try:
        lc.out.wait_for(r"device events follow")
        started = lc.record()
        assert any("mosquitto" in cmd for _, cmd in started.values()), started
        lc.stop_with(CASES[case])
        wait_all_gone(started)
        if CASES[case][0] != signal.SIGKILL:  # SIGKILL: no code runs, so its folders stay
            temp = [p.name for p in tmp.iterdir() if not (p / ".complete").exists()]  # the .mpy cache stays
            assert not temp, f"temporary folders left: {temp}"
    finally:
        lc.close()
        shutil.rmtree(tmp, ignore_errors=True)


# -- run -----------------------------------------------------------------------
@pytest.mark.parametrize("case", list(CASES))
def test_run_interrupted_prints_what_it_measured_and_leaves_nothing(
    case: str, broker: RunningBroker, availability: HostMqtt, tmp_path: Path
) -> None:
    url = f"mqtt://{broker.info.host}:{broker.info.port}"
    raw = tmp_path / "journeys.json"
    lc = Lightctl(
        "run", "--broker", url, "--journeys", "mqtt", "--count", "1000000", "--warmup", "0", "--json", str(raw)
    )
    try:
        device_id = re.search(r", id (\S+),", lc.out.wait_for(r"^device: ")).group(1)  # type: ignore[union-attr]
        online = wait_online(availability, device_id)
        lc.err.wait_for(r"mqtt journeys: \d+/")  # measuring
        started = lc.record()
        code = lc.stop_with(CASES[case])
        wait_all_gone(started)
        assert_last_will(availability, online)
        sig = CASES[case][0]
        if sig != signal.SIGKILL:
            out, err = lc.out.rest(), lc.err.rest()
            assert code == 128 + sig, f"exit code {code}\n{out}\n{err}"
            assert f"incomplete: interrupted by {sig.name}" in out, out
            assert re.search(r"mqtt journeys \(closed\): [1-9]\d* confirmed", out), out
            assert "Traceback" not in err, err
            data = json.loads(raw.read_text())  # the raw timings of what was measured, marked too
            assert data["meta"]["incomplete"] == f"incomplete: interrupted by {sig.name}"
            assert data["runs"][0]["confirmed"] > 0
    finally:
        lc.close()


# -- the kernel's rule behind it -------------------------------------------------
def test_a_child_dies_with_the_thread_that_spawned_it() -> None:
    """PR_SET_PDEATHSIG follows the forking thread: long-lived children must come from a long-lived thread."""
    if not children.DIES_WITH_PARENT:
        pytest.skip("no PR_SET_PDEATHSIG here")
    box: list[subprocess.Popen[bytes]] = []
    t = threading.Thread(target=lambda: box.append(children.spawn(["sleep", "60"])))
    t.start()
    t.join(timeout=10)
    assert box, "the thread spawned nothing"
    assert box[0].wait(timeout=10) == -signal.SIGKILL
