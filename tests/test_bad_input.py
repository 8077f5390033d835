"""Bad input fails before anything starts, with one line saying what to fix.

Every case runs ``python -m host_harness run ...`` as a user does, and checks
exit code 2, a single ``error:`` line naming the option, file or key, and that
neither a broker nor a device was started (``run`` prints a ``broker:`` line as
soon as it has one and a ``device:`` line once the device booted).
"""

from __future__ import annotations

import json
import os
import pty
import socket
import subprocess
import sys
import tty
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_runner import run_cli

from host_harness.broker.running import RunningBroker, free_port
from host_harness.cli.validate import PROBE_TIMEOUT
from host_harness.core.events import WaitTimeout
from host_harness.dut import boards
from host_harness.dut.device import Device, unix_config
from host_harness.dut.unix_device import UnixDevice
from host_harness.link.serial_link import SerialLink

pytestmark = pytest.mark.needs_process  # runs the CLI, which spawns Unix-port devices

STARTED = ("broker:", "device:", "clock:")  # what run prints once it has started something


def harness(*args: str, timeout: float = 120, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, timeout=timeout, cwd=cwd)


def refused(r: subprocess.CompletedProcess[str], *names: str) -> str:
    """Exit 2, one ``error:`` line naming ``names``, nothing started; returns the line."""
    out = r.stdout + r.stderr
    assert r.returncode == 2, out
    errors = [line for line in out.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("error: "), out
    for name in names:
        assert name in errors[0], out
    assert "Traceback" not in out, out
    started = [line for line in r.stdout.splitlines() if line.startswith(STARTED)]
    assert not started, f"started before refusing: {started}"
    return errors[0]


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["--journeys", ""], ["--journeys", "no journey given"]),
        (["--journeys", "serial,serial"], ["--journeys", "'serial' given twice"]),
        (["--journeys", "mqtt,,serial"], ["--journeys", "an empty name"]),
        (["--journeys", "mqt"], ["--journeys", "unknown journey 'mqt'"]),
        (["--count", "0"], ["--count 0", "at least 1"]),
        (["--count", "-5"], ["--count -5", "at least 1"]),
        (["--button-count", "0"], ["--button-count 0"]),
        (["--warmup", "-1"], ["--warmup -1"]),
        (["--rate", "0"], ["--rate 0", "more than 0"]),
        (["--rate", "-2.5"], ["--rate -2.5", "more than 0"]),
        (["--timeout", "0"], ["--timeout 0"]),
        (["--heapsize", "banana"], ["--heapsize 'banana'", "not a size"]),
        (["--heapsize", "64q"], ["--heapsize '64q'"]),
        (["--device", "/dev/ttyNOPE0"], ["--device /dev/ttyNOPE0", "no such serial port", "serial ports"]),
        (["--board", "no-such-board"], ["--board no-such-board", "unknown board"]),
        (["--broker", "ftp://nowhere"], ["--broker", "ftp"]),
        (["--no-budget", "--budget", "x.toml"], ["--budget and --no-budget"]),
    ],
)
def test_a_bad_option_is_refused_naming_it(args: list[str], names: list[str]) -> None:
    refused(harness("run", *args), *names)


def test_output_paths_that_cannot_be_written_are_refused_first(tmp_path: Path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    refused(harness("run", "--json", str(tmp_path / "no" / "such" / "out.json")), "--json", "does not exist")
    refused(harness("run", "--json", str(tmp_path)), "--json", "is a folder")
    refused(harness("run", "--json", str(a_file / "out.json")), "--json", "is not a folder")
    # a report folder that is a file was a FileExistsError traceback after the whole run
    refused(harness("run", "--report", str(a_file)), "--report", "exists and is not a folder")
    refused(harness("run", "--report", str(a_file / "sub" / "report")), "--report", "is not a folder")


def test_tls_files_need_an_mqtts_broker_and_must_exist(tmp_path: Path) -> None:
    pem = tmp_path / "ca.pem"
    pem.write_text("not a certificate\n")
    refused(harness("run", "--broker", "mqtt://127.0.0.1:1883", "--ca", str(pem)), "--ca", "mqtts://")
    refused(harness("run", "--cert", str(pem)), "--cert", "mqtts://")
    refused(harness("run", "--broker", "mosquitto", "--key", str(pem)), "--key", "mqtts://")
    missing = tmp_path / "missing.pem"
    refused(harness("run", "--broker", "mqtts://127.0.0.1:8883", "--ca", str(missing)), f"--ca {missing}", "no such")
    refused(harness("run", "--broker", "mqtts://127.0.0.1:8883", "--ca", str(pem)), f"--ca {pem}", "not a CA")


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("[journey.mqt]\np99 = 1.0\n", ["[journey.mqt]", "unknown journey 'mqt'"]),
        ("[journey.mqtt]\np95 = 1.0\n", ["unknown key 'p95'"]),
        ('[journey.mqtt]\np99 = "fast"\n', ["[journey.mqtt] p99 = 'fast'", "not a number"]),
        ("[journey.mqtt]\np99 = -1.0\n", ["[journey.mqtt] p99 = -1.0", ">= 0"]),
        ("[journey.serial.hops.device_apply]\np99 = -3\n", ["[journey.serial.hops.device_apply] p99 = -3"]),
        ("[journey.mqtt.hops.warp]\np99 = 1\n", ["unknown hop 'warp'"]),
        ("[journey.mqtt\n", ["not a valid budget file"]),
    ],
)
def test_a_bad_budget_file_is_refused_naming_file_and_key(tmp_path: Path, text: str, names: list[str]) -> None:
    f = tmp_path / "my-budget.toml"
    f.write_text(text)
    refused(harness("run", "--budget", str(f)), "--budget", "my-budget.toml", *names)


def test_a_missing_budget_file_is_refused(tmp_path: Path) -> None:
    refused(harness("run", "--budget", str(tmp_path / "nope.toml")), "--budget", "nope.toml", "no such")


def _board_without_budget(tmp_path: Path) -> Path:
    bdef = boards.load("unix")
    del bdef["budget"]
    f = tmp_path / "no-budget-board.json"
    f.write_text(json.dumps(bdef))
    return f


def test_a_board_without_a_budget_needs_no_budget(tmp_path: Path, broker: RunningBroker) -> None:
    board = _board_without_budget(tmp_path)
    refused(harness("run", "--board", str(board)), "--board", "no latency budget", "--no-budget")
    r = harness(
        "run", "--board", str(board), "--no-budget", "--journeys", "mqtt", "--count", "3", "--warmup", "1",
        "--broker", broker.info.url,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert "budget: none (--no-budget)" in r.stdout and "verdict: PASS" in r.stdout


def test_an_unreachable_broker_says_connection_refused() -> None:
    url = f"mqtt://127.0.0.1:{free_port()}"  # nothing listens there
    line = refused(harness("run", "--broker", url))
    assert line == f"error: --broker {url}: connection refused"


def test_an_unknown_broker_host_says_so() -> None:
    refused(harness("run", "--broker", "mqtt://no-such-host.invalid"), "--broker", "no-such-host.invalid")


@pytest.fixture
def silent_tcp() -> Iterator[int]:
    """A TCP port that accepts connections and never says a word."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(4)
        yield int(s.getsockname()[1])


def test_a_broker_that_never_answers_mqtt_is_named(silent_tcp: int) -> None:
    url = f"mqtt://127.0.0.1:{silent_tcp}"
    refused(harness("run", "--broker", url), f"--broker {url}", f"no MQTT CONNACK within {PROBE_TIMEOUT:g} s")


def test_a_failed_tls_handshake_is_named(broker: RunningBroker) -> None:
    url = f"mqtts://127.0.0.1:{broker.info.port}"  # TLS against the broker's plain port
    refused(harness("run", "--broker", url), f"--broker {url}", "TLS handshake failed")


def test_board_pins_are_not_simulated_on_the_unix_port_warns() -> None:
    r = harness("run", "--board", "esp32-devkitc", "--broker", f"mqtt://127.0.0.1:{free_port()}")
    refused(r, "connection refused")
    warnings = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "--board esp32-devkitc" in warnings[0] and "not simulated" in warnings[0]
    r = harness("run", "--broker", f"mqtt://127.0.0.1:{free_port()}")
    assert "warning:" not in r.stderr  # the Unix port's own board: nothing to warn about


def test_serial_journeys_run_on_a_device_without_mqtt() -> None:
    """A device whose config has no MQTT: ``--journeys serial`` starts no broker and waits for none."""
    dev = UnixDevice(unix_config(boards.load("unix"), None))
    port = dev.start()
    try:
        r = harness(
            "run", "--no-budget", "--device", port, "--board", "unix", "--journeys", "serial", "--count", "5",
            "--warmup", "2",
        )  # fmt: skip
        assert r.returncode == 0, r.stdout + r.stderr
        assert "broker: none (serial journeys only)" in r.stdout
        assert "serial journeys (closed): 5 confirmed, 0 lost" in r.stdout
    finally:
        dev.cleanup()


def test_a_silent_serial_port_says_nothing_was_read() -> None:
    master, slave = pty.openpty()
    tty.setraw(slave)
    dev = Device(SerialLink(os.ttyname(slave)), boards.load("unix"))
    try:
        with pytest.raises(WaitTimeout, match="nothing at all was read from"):
            dev.wait_boot(timeout=1.0)
    finally:
        dev.close()
        os.close(master)
        os.close(slave)


def test_a_bad_budget_is_one_usage_error_for_a_pytest_run(tmp_path: Path) -> None:
    (tmp_path / "test_light.py").write_text("def test_one(journey):\n    pass\n\n\ndef test_two(journey):\n    pass\n")
    bad = tmp_path / "bad-budget.toml"
    bad.write_text("[journey.mqt]\np99 = 1\n")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--lightctl-budget",
            str(bad),
            "test_light.py",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
    )
    out = r.stdout + r.stderr
    assert r.returncode == pytest.ExitCode.USAGE_ERROR, out
    errors = [line for line in out.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and "--lightctl-budget" in errors[0] and "unknown journey 'mqt'" in errors[0], out
    assert "test_one" not in out and "lightctl broker" not in out
