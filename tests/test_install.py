"""An installed lightctl works outside the checkout, as a team uses it from its own repository.

The wheel is built from this checkout, installed into a fresh virtual
environment, and then used from a folder that holds no checkout: the main job
runs, and the pytest plugin runs a test of the team's own. Nothing is on PATH
but the system's folders: the venv is not activated.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from collections.abc import Iterator
from pathlib import Path

import pytest

from host_harness.paths import ROOT

pytestmark = pytest.mark.needs_process  # installs a wheel and runs its own devices

CHECKOUT = Path(__file__).resolve().parents[1]
CLEAN_PATH = os.pathsep.join(p for p in ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"))

TEAM_TEST = """
def test_the_light_turns_on(journey):
    j = journey.via_mqtt("ON", 200)
    assert j.state == "ON" and j.brightness == 200


def test_the_serial_link_confirms(journey):
    j = journey.via_serial("OFF")
    assert j.state == "OFF"
"""


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "LIGHTCTL_ROOT", "PYTHONPATH")}
    env["PATH"] = CLEAN_PATH
    return env


def _run_outside(cwd: Path, *cmd: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``cmd`` in ``cwd`` (no checkout there), with only the system's folders on PATH and no stdin."""
    return subprocess.run(
        list(cmd), capture_output=True, text=True, timeout=timeout, cwd=cwd, env=_env(), stdin=subprocess.DEVNULL
    )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh venv with the wheel of this checkout installed (not editable)."""
    if ROOT != CHECKOUT:
        pytest.skip("runs from a checkout only")
    tmp = tmp_path_factory.mktemp("install")
    wheels = tmp / "wheels"
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(CHECKOUT)],
        capture_output=True,
        text=True,
        timeout=300,
        env=_env(),
    )
    assert r.returncode == 0, r.stderr
    (wheel,) = wheels.glob("lightctl-*.whl")
    env_dir = tmp / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    r = subprocess.run(
        [str(py), "-m", "pip", "install", "-q", f"{wheel}[test]"],
        capture_output=True,
        text=True,
        timeout=600,
        env=_env(),
    )
    assert r.returncode == 0, r.stderr
    yield env_dir


def test_the_wheel_ships_firmware_and_boards(installed: Path, tmp_path: Path) -> None:
    r = _run_outside(
        tmp_path,
        str(installed / "bin" / "python"),
        "-c",
        "from host_harness import paths; from host_harness.dut import boards; "
        "print(paths.FIRMWARE_DIR); print(sorted(boards.names()))",
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    fw, names = r.stdout.splitlines()
    assert Path(fw).is_relative_to(installed) and (Path(fw) / "main.py").is_file()
    assert "'unix'" in names and "'esp32-devkitc'" in names


def test_the_installed_main_job_runs_from_another_folder(installed: Path, tmp_path: Path) -> None:
    r = _run_outside(
        tmp_path, str(installed / "bin" / "lightctl"), "run", "--no-budget", "--count", "5", "--button-count", "2",
        "--warmup", "2",
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "mqtt journeys (closed): 5 confirmed, 0 lost" in r.stdout, r.stdout
    assert "verdict: PASS" in r.stdout


def test_the_installed_plugin_runs_a_teams_own_test(installed: Path, tmp_path: Path) -> None:
    (tmp_path / "test_team.py").write_text(TEAM_TEST)
    r = _run_outside(tmp_path, str(installed / "bin" / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider",
                     "test_team.py")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 passed" in r.stdout
