"""lightctl looks like a tool people know: --version, help per command with an example, one port option."""

from __future__ import annotations

import argparse
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from host_harness.__main__ import parser

LIGHTCTL = Path(sys.executable).parent / "lightctl"
# What each command needs besides the port to parse.
REQUIRED = {"flash": ["--firmware", "image.bin"], "deploy": ["--board", "unix"]}


def commands() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def lightctl(*args: str) -> subprocess.CompletedProcess[str]:
    if not LIGHTCTL.exists():
        pytest.skip("the lightctl script is not installed beside this interpreter")
    return subprocess.run([str(LIGHTCTL), *args], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def test_version_is_the_installed_distribution_s() -> None:
    r = lightctl("--version")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"lightctl {metadata.version('lightctl')}"


def test_lightctl_alone_lists_the_commands() -> None:
    r = lightctl()
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: lightctl "), r.stdout
    for name in commands():
        assert f"    {name} " in r.stdout, f"{name} missing from:\n{r.stdout}"


def test_prog_is_how_it_was_run() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "host_harness", "sim", "--help"], capture_output=True, text=True, timeout=60
    )
    assert r.stdout.startswith("usage: python -m host_harness sim "), r.stdout
    assert lightctl("sim", "--help").stdout.startswith("usage: lightctl sim ")


@pytest.mark.parametrize("name", sorted(commands()))
def test_each_command_s_help_has_a_description_and_an_example(name: str) -> None:
    r = lightctl(name, "--help")
    assert r.returncode == 0, r.stderr
    description = commands()[name].description
    assert description, f"{name} has no description"
    assert " ".join(description.split()[:6]) in " ".join(r.stdout.split()), r.stdout
    tail = r.stdout[r.stdout.index("example") :]
    assert f"lightctl {name} " in tail, r.stdout


@pytest.mark.parametrize("name", sorted(commands()))
def test_every_command_names_the_serial_port_device_and_takes_port_too(name: str) -> None:
    p = parser()
    for option in ("--device", "--port"):
        args = p.parse_args([name, option, "/dev/ttyUSB7", *REQUIRED.get(name, [])])
        assert args.device == "/dev/ttyUSB7", (name, option)


def test_port_alias_reaches_the_command() -> None:
    r = lightctl("deploy", "--port", "/dev/ttyUSB-lightctl-none", "--board", "esp32-devkitc")
    assert r.returncode != 0
    assert "/dev/ttyUSB-lightctl-none" in r.stderr and "Traceback" not in r.stderr, r.stderr
