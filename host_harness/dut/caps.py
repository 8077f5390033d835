"""What a device under test can do for a test, and whether a board runs this checkout's firmware.

A test says what it needs with a marker; the device says what it has. The
Unix port the harness spawns has everything: the harness starts, kills and
restarts its process and writes its config. A device on a serial port runs
what was deployed to it: no process control, no config of the test's own;
simulated pins only when its firmware reports ``"simulated": true`` (the Unix
port as a board), a sense input when its board definition declares one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from host_harness.core.events import WaitTimeout
from host_harness.dut import boards
from host_harness.dut.device import Device
from host_harness.image import firmware_build
from host_harness.image.deploy import deploy as deploy_to
from host_harness.image.ports import DeployError
from host_harness.link.serial_link import SerialLink

INFO_TIMEOUT = 10.0  # seconds for a board to answer info (it may be booting)

# marker -> what it means (pytest's marker help)
MARKERS = {
    "needs_process": "starts, kills or restarts the device process, or spawns more devices (the Unix port)",
    "needs_config": "gives the device a config of its own: broker, qos, discovery, restore, TLS, board (the Unix port)",
    "needs_sim_pin": "reads or drives simulated pins: the LED's level, the button (a device reporting simulated)",
    "needs_sense": "a sense input wired to the light (the Unix port, or a board whose definition declares one)",
    "hardware": "a real board, not a simulated one",
    "unix_only": "needs_process, needs_config and needs_sim_pin together: the Unix port the harness spawns",
}

# marker -> (capabilities it needs, what the skip reason says is missing)
_NEEDS: dict[str, tuple[tuple[str, ...], str]] = {
    "needs_process": (("process",), "process control (start, kill, restart the device)"),
    "needs_config": (("config",), "a config of the test's own written to the device"),
    "needs_sim_pin": (("sim_pin",), "simulated pins"),
    "needs_sense": (("sense",), "a sense input"),
    "hardware": (("hardware",), "a real board"),
    "unix_only": (("process", "config", "sim_pin"), "the Unix port the harness spawns"),
}


class BoardError(RuntimeError):
    """A board cannot be used for this run (unreachable, or other firmware)."""


@dataclass(frozen=True)
class Caps:
    where: str  # the device, as a skip reason names it
    process: bool
    config: bool
    sim_pin: bool
    sense: bool
    hardware: bool

    def missing(self, markers: list[str]) -> str | None:
        """Why a test with these markers cannot run here, or None."""
        lacks: list[str] = []
        for m in markers:
            need = _NEEDS.get(m)
            if need is not None and not all(getattr(self, c) for c in need[0]) and need[1] not in lacks:
                lacks.append(need[1])
        if not lacks:
            return None
        return f"needs {' and '.join(lacks)}: {self.where} has not"

    def describe(self) -> str:
        has = [m for m, (c, _) in _NEEDS.items() if m != "unix_only" and all(getattr(self, x) for x in c)]
        return f"{self.where}: runs tests marked {', '.join(has) or 'none'} (and unmarked ones)"


UNIX = Caps("the Unix port", process=True, config=True, sim_pin=True, sense=True, hardware=False)


def for_board(spec: str, bdef: dict[str, Any], info: dict[str, Any]) -> Caps:
    """What a device on a serial port offers, from its board definition and its info answer."""
    simulated = bool(info.get("simulated"))
    kind = "simulated" if simulated else "real"
    return Caps(
        f"device {spec} ({kind} board {info.get('board', '?')})",
        process=False,
        config=False,
        sim_pin=simulated,
        sense=bool(bdef.get("sense")),
        hardware=not simulated,
    )


def ask_info(spec: str, board: str, timeout: float = INFO_TIMEOUT) -> dict[str, Any]:
    """Attach to a board and ask ``info``."""
    try:
        link = SerialLink(spec)
    except ConnectionError as e:
        raise BoardError(f"device {spec}: {e}") from None
    try:
        return Device(link, boards.load(board)).wait_boot(timeout)
    except WaitTimeout as e:
        raise BoardError(f"device {spec}: {e}") from None
    finally:
        link.close()


def check_firmware(spec: str, board: str, deploy: bool, say: Callable[[str], None]) -> dict[str, Any]:
    """The board's info, once it runs this checkout's firmware (deployed first when ``deploy``).

    A board running other firmware is refused naming both build ids; with
    ``deploy``, a board answering no info (freshly flashed, at its REPL) is
    deployed to as well.
    """
    want = firmware_build.firmware_hash()
    try:
        info = ask_info(spec, board)
    except BoardError as e:
        if not deploy:
            raise
        say(f"lightctl: {e}")
        has = "no firmware answering info"
    else:
        have = str(info.get("fw") or "")
        if have == want:
            return info
        has = f"firmware {have}" if have else "firmware without a build id"
    if not deploy:
        raise BoardError(
            f"device {spec} runs {has}, this checkout's is {want}: deploy it first "
            f"(lightctl deploy --device {spec} --board {board} --config FILE), or pass --lightctl-deploy"
        )
    say(f"lightctl: device {spec} runs {has}, this checkout's is {want}: deploying it")
    try:
        res = deploy_to(spec, board, say=lambda line: say(f"  {line}"))
    except DeployError as e:
        raise BoardError(f"--lightctl-deploy: {e}") from None
    have = str(res.info.get("fw") or "")
    if have != want:
        raise BoardError(f"device {spec} reports firmware {have or 'without a build id'} after deploying {want}")
    return res.info
