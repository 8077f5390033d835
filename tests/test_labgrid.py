"""A board shared through labgrid: ``--device labgrid:PLACE`` against a real
``labgrid-coordinator`` and ``labgrid-exporter`` on loopback.

The board is a VirtualBoard (the Unix port at its REPL on a pty), linked under
/dev and exported as a ``RawSerialPort``; the exporter serves it with ser2net
over RFC 2217 while the place is acquired. deploy, run and monitor each acquire
the place, find its port and release it; an exporter restart moves the port and
an open link follows it to the new one; a place that cannot be used is a one-line error.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_runner import ENV, run_cli

from host_harness.broker.running import RunningBroker
from host_harness.core.events import WaitTimeout
from host_harness.dut import boards, labgrid_place
from host_harness.dut.device import Device
from host_harness.dut.labgrid_lab import LocalLab, find_ser2net
from host_harness.dut.virtual_board import VirtualBoard
from host_harness.image.deploy import wait_booted
from host_harness.link.serial_link import SerialLink
from host_harness.measure.journeys import Journeys

try:
    import labgrid  # noqa: F401

    HAVE_LABGRID = True
except ImportError:
    HAVE_LABGRID = False

pytestmark = [
    pytest.mark.unix_only,
    pytest.mark.skipif(not HAVE_LABGRID, reason="labgrid is not installed (pip install 'lightctl[labgrid]')"),
    pytest.mark.skipif(find_ser2net() is None, reason="ser2net is not installed (apt-get install ser2net)"),
    pytest.mark.skipif(not os.access("/dev", os.W_OK), reason="the exporter needs the pty linked under /dev (root)"),
]

PLACE = "lightctl-bench"
OTHER = "lightctl-spare"  # matches the same serial port: it cannot be acquired while PLACE holds it


def harness(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, timeout=timeout)


class Lab:
    def __init__(self, lab: LocalLab, board: VirtualBoard) -> None:
        self.lab = lab
        self.board = board
        self.lg = ("--lg-coordinator", lab.address)

    def owner(self, place: str = PLACE) -> str | None:
        return labgrid_place.coordinator_view(self.lab.address)[0][place]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    tmp = tmp_path_factory.mktemp("labgrid")
    fs = tmp / "board-fs"
    fs.mkdir()
    board = VirtualBoard(fs)
    lg = LocalLab(tmp)
    before = labgrid_place.set_coordinator(lg.address)  # for the harness used in this process
    try:
        lg.export("bench", board.start())
        lg.start_coordinator()
        lg.start_exporter()
        lg.create_place(PLACE, "bench")
        lg.create_place(OTHER, "bench")
        yield Lab(lg, board)
    finally:
        lg.stop()
        board.cleanup()
        labgrid_place.set_coordinator(before)
    assert lg.live_ser2net() == [], "a ser2net the exporter started outlived the lab"


def deploy_through_the_place(lab: Lab, broker: RunningBroker, tmp_path: Path) -> dict[str, Any]:
    """``deploy --device labgrid:PLACE``: the firmware on the board, connected to ``broker``; its config."""
    b = broker.info
    cfg = {
        "device_id": f"lg-{secrets.token_hex(2)}",
        "mqtt": {"host": b.host, "port": b.port, "user": b.username, "password": b.password, "keepalive": 30},
    }
    cfg_file = tmp_path / "device.json"
    cfg_file.write_text(json.dumps(cfg))
    r = harness("deploy", "--device", f"labgrid:{PLACE}", *lab.lg, "--board", "unix", "--config", str(cfg_file))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"booted: device {cfg['device_id']}" in r.stdout, r.stdout
    assert (lab.board.workdir / "main.py").exists()
    assert lab.owner() is None, "deploy left the place acquired"
    return cfg


def test_deploy_run_and_monitor_through_a_labgrid_place(lab: Lab, broker: RunningBroker, tmp_path: Path) -> None:
    b = broker.info
    cfg = deploy_through_the_place(lab, broker, tmp_path)
    device = f"labgrid:{PLACE}"

    r = harness(
        "run", "--no-budget", "--device", device, *lab.lg, "--board", "unix", "--broker", b.url,
        "--journeys", "serial,mqtt", "--count", "10", "--warmup", "2",
    )  # fmt: skip
    # 0 or 1: the verdict on the budget (labgrid's ser2net adds its own delay to the serial hop); 2 is an error
    assert r.returncode in (0, 1), r.stdout + r.stderr
    assert f"device: {device}" in r.stdout, r.stdout
    assert "serial journeys (closed): 10 confirmed, 0 lost" in r.stdout, r.stdout
    assert "mqtt journeys (closed): 10 confirmed, 0 lost" in r.stdout, r.stdout
    assert f"note: {labgrid_place.SERIAL_NOTE}" in r.stdout, r.stdout
    assert lab.owner() is None, "run left the place acquired"

    r = harness("monitor", "--device", device, *lab.lg, "--seconds", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith(f"monitor {device}: device {cfg['device_id']}"), r.stdout
    assert lab.owner() is None, "monitor left the place acquired"


def deployed(lab: Lab, broker: RunningBroker, tmp_path: Path) -> dict[str, Any]:
    """The board's config, deploying the firmware first unless an earlier test (same worker) did."""
    on_board = lab.board.workdir / "config.json"
    cfg = json.loads(on_board.read_text()) if on_board.exists() else {}
    if cfg.get("mqtt", {}).get("port") != broker.info.port:
        cfg = deploy_through_the_place(lab, broker, tmp_path)
    return cfg


def test_the_pytest_plugin_takes_a_labgrid_place(lab: Lab, broker: RunningBroker, tmp_path: Path) -> None:
    cfg = deployed(lab, broker, tmp_path)
    suite = tmp_path / "test_on_the_place.py"
    suite.write_text(
        "def test_journeys(journey, device):\n"
        f"    assert device.device_id == {cfg['device_id']!r}\n"
        "    assert device.link.url.startswith('rfc2217://127.0.0.1:')\n"
        "    assert journey.via_serial('ON', 21).brightness == 21\n"
        "    assert journey.via_mqtt('OFF', 3).state == 'OFF'\n"
    )
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(suite), "--rootdir", str(tmp_path),
         "--lightctl-device", f"labgrid:{PLACE}", "--lightctl-lg-coordinator", lab.lab.address,
         "--lightctl-board", "unix", "--lightctl-broker", broker.info.url],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL, env=ENV, cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 passed" in r.stdout, r.stdout
    assert lab.owner() is None, "pytest left the place acquired"


def test_exporter_restart_mid_session_moves_the_port_and_the_open_link_follows_it(
    lab: Lab, broker: RunningBroker, tmp_path: Path
) -> None:
    deployed(lab, broker, tmp_path)
    spec = f"labgrid:{PLACE}"
    bdef = boards.load("unix")
    try:
        dev = Device(SerialLink(spec, name="labgrid", reopen_timeout=60), bdef)
        first = dev.link.url
        try:
            assert first.startswith("rfc2217://127.0.0.1:") and first.endswith(labgrid_place.URL_OPTIONS)
            assert lab.owner() is not None
            dev.wait_boot(10)
            assert Journeys(dev).via_serial("ON", 41).brightness == 41
            lab.lab.stop_exporter()  # mid-session: the place stays acquired, its ser2net goes
            assert lab.lab.live_ser2net() == [], "the stopped exporter left its ser2net running"

            # the exporter is away: the place is still ours, its port is not there
            with pytest.raises(labgrid_place.LabgridError, match="not available: its exporter is offline"):
                labgrid_place.resolve(spec, timeout=0)
            # another place on that exporter cannot be acquired now
            r = harness("monitor", "--device", f"labgrid:{OTHER}", *lab.lg, "--seconds", "1")
            assert r.returncode == 2, r.stdout + r.stderr
            assert r.stderr.count("\n") == 1 and "is its exporter running?" in r.stderr, r.stderr
            assert dev.link.log.closed_reason is None, dev.link.log.closed_reason
            assert any(f"waiting up to 60 s for {spec} to come back" in n for n in dev.link.noise), dev.link.noise

            lab.lab.start_exporter()
            # the same link: the write waits for the place's port to be found and opened again
            assert Journeys(dev).via_serial("OFF", 9).state == "OFF"
            assert dev.link.reopens == 1
            assert dev.link.url != first, "the restarted exporter's ser2net should listen on a new port"
            assert any(f"reopened {spec} on {dev.link.url}" in n for n in dev.link.noise), dev.link.noise
        finally:
            dev.close()

        # an exporter that does not come back within the link's wait: closed, saying why
        dev = Device(SerialLink(spec, name="labgrid, short wait", reopen_timeout=1.0), bdef)
        try:
            assert Journeys(dev).via_serial("ON", 5).brightness == 5
            lab.lab.stop_exporter()
            with pytest.raises(WaitTimeout, match=r"did not come back within 1 s: .*its exporter is offline"):
                dev.log.wait_for(lambda e: False, 20.0, "the serial link to give the place up")
        finally:
            dev.close()
            lab.lab.start_exporter()
        info = wait_booted(spec, bdef, 20)  # a new link on the place finds its port
        assert info["board"] == "unix"
    finally:
        labgrid_place.release(PLACE)
        if lab.lab.exporter is None:  # failed while it was away: the next tests need it
            lab.lab.start_exporter()
    assert lab.owner() is None


@pytest.mark.parametrize(
    ("setup", "device", "expect"),
    [
        (None, "labgrid:lightctl-no-such-place", "does not exist on the coordinator"),
        ("other-user", f"labgrid:{PLACE}", "is already acquired by"),
        (None, "labgrid:", "bad labgrid device"),
    ],
)
def test_a_place_that_cannot_be_used_is_a_one_line_error(lab: Lab, setup: str | None, device: str, expect: str) -> None:
    other_env = dict(ENV, LG_USERNAME="lightctl-someone-else")
    if setup == "other-user":
        r = lab.lab.client("-p", PLACE, "acquire", env=other_env)
        assert r.returncode == 0, r.stdout + r.stderr
    try:
        r = harness("monitor", "--device", device, *lab.lg, "--seconds", "1")
        assert r.returncode == 2, r.stdout + r.stderr
        assert r.stdout == "" and r.stderr.count("\n") == 1, r.stderr
        assert r.stderr.startswith("error: ") and expect in r.stderr, r.stderr
    finally:
        if setup == "other-user":
            r = lab.lab.client("-p", PLACE, "release", env=other_env)
            assert r.returncode == 0, r.stdout + r.stderr


def test_no_coordinator_is_a_one_line_error(tmp_path: Path) -> None:
    from host_harness.dut.labgrid_lab import free_tcp_port

    r = harness("monitor", "--device", "labgrid:x", "--lg-coordinator", f"127.0.0.1:{free_tcp_port()}")
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "cannot reach the labgrid coordinator" in r.stderr, r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "host_harness", "monitor", "--device", "labgrid:x"],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        env={k: v for k, v in ENV.items() if k != labgrid_place.ENV_COORDINATOR},
    )
    assert r.returncode == 2 and "--lg-coordinator" in r.stderr, r.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_the_place_is_released_on_sigterm_and_ctrl_c(lab: Lab, sig: signal.Signals) -> None:
    p = subprocess.Popen(
        [sys.executable, "-m", "host_harness", "monitor", "--device", f"labgrid:{PLACE}", *lab.lg],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=ENV,
    )
    try:
        head = p.stdout.readline() if p.stdout else ""  # printed once the place is acquired and the port open
        assert head.startswith(f"monitor labgrid:{PLACE}:"), head + (p.stderr.read() if p.stderr else "")
        assert lab.owner() is not None
        p.send_signal(sig)
        p.wait(timeout=20)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=10)
    assert lab.owner() is None, f"the place stayed acquired after {sig.name}"
