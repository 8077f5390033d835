"""Command line for real boards: ``flash``, ``deploy`` and ``monitor``."""

from __future__ import annotations

import argparse
from typing import Any

from host_harness.cli.help import device_option, picked, subcommand
from host_harness.dut.labgrid_place import add_coordinator_option


def _flash(args: argparse.Namespace) -> int:
    """write a MicroPython image to an ESP32 board with esptool

    Write a MicroPython image to an ESP32 board with esptool (the board's chip is checked
    against the image's); then deploy the firmware with `deploy`."""
    from host_harness.image.flash import flash

    flash(args.device, args.firmware, **picked(args, "chip", "erase", "baud", "addr", "connect_attempts", "timeout"))
    print(f"flashed; next: lightctl deploy --device {args.device} --board BOARD --config CONFIG.json")
    return 0


def _deploy(args: argparse.Namespace) -> int:
    """copy the firmware, board and config to a board (only what changed), reset

    Copy the firmware (precompiled with mpy-cross), the board definition and a device config
    to a board running MicroPython, only the files that changed, then reset it and wait for it to boot."""
    from host_harness.image.deploy import deploy, load_config

    config = load_config(args.config) if args.config else None
    deploy(
        args.device,
        args.board,
        config,
        use_mpy=not args.no_mpy,
        force=args.force,
        reset=not args.no_reset,
        boot_timeout=args.boot_timeout,
        repl_timeout=args.repl_timeout,
        say=print,
    )
    return 0


def _monitor(args: argparse.Namespace) -> int:
    """print a device's event stream, one readable line per event

    Print a device's event stream, one readable line per event, with the device's own
    durations (command received -> pin written -> report sent); console noise is shown dimmed."""
    from host_harness.cli import monitor

    return monitor.run(args)


def add_flash_parser(sub: Any) -> None:
    p = subcommand(
        sub, "flash", _flash, "lightctl flash --device /dev/ttyUSB0 --firmware ESP32_GENERIC-v1.24.1.bin --erase"
    )
    device_option(p, "serial port of the board (/dev/ttyUSB0, rfc2217://host:port)")
    p.add_argument("--firmware", required=True, metavar="FILE.bin", help="MicroPython image for the board's chip")
    p.add_argument("--chip", default="auto", help="esp32, esp32s3, esp32c3, ... (default: auto-detect)")
    p.add_argument("--erase", action="store_true", help="erase the whole flash first (the filesystem too)")
    p.add_argument("--baud", type=int, default=460800, help="baud rate while flashing (default 460800)")
    p.add_argument("--addr", default=None, help="flash offset (default: from the image's chip: 0x1000 on ESP32)")
    p.add_argument(
        "--connect-attempts", type=int, default=7, help="esptool attempts to reach the bootloader (default 7)"
    )
    p.add_argument("--timeout", type=float, default=600.0, help="give up after this many seconds (default 600)")


def add_deploy_parser(sub: Any) -> None:
    p = subcommand(
        sub, "deploy", _deploy, "lightctl deploy --device /dev/ttyUSB0 --board esp32-devkitc --config device.json"
    )
    device_option(p, "serial port of the board (/dev/ttyUSB0, rfc2217://host:port, labgrid:PLACE)")
    add_coordinator_option(p)
    p.add_argument("--board", required=True, help="board name from boards/ (or a board JSON file)")
    p.add_argument("--config", default=None, metavar="FILE", help="device config JSON (Wi-Fi, MQTT, device_id)")
    p.add_argument("--no-mpy", action="store_true", help="deploy .py sources, not .mpy precompiled by mpy-cross")
    p.add_argument("--force", action="store_true", help="copy every file, changed or not")
    p.add_argument("--no-reset", action="store_true", help="do not reset the board afterwards")
    p.add_argument("--boot-timeout", type=float, default=30.0, help="seconds to wait for the firmware after reset")
    p.add_argument("--repl-timeout", type=float, default=5.0, help="seconds to wait for the REPL prompt")


def add_monitor_parser(sub: Any) -> None:
    p = subcommand(sub, "monitor", _monitor, "lightctl monitor --device /dev/ttyUSB0 --seconds 60")
    device_option(p, "serial port of the device (/dev/ttyUSB0, /dev/pts/N, rfc2217://..., labgrid:PLACE)")
    add_coordinator_option(p)
    p.add_argument("--board", default=None, help="board name from boards/ (shown in the header)")
    p.add_argument("--count", type=int, default=None, help="stop after this many events")
    p.add_argument("--seconds", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--info-timeout", type=float, default=3.0, help="seconds to wait for the device's info first")
    p.add_argument("--raw", action="store_true", help="print each event's JSON after its time")
    p.add_argument("--color", choices=("auto", "always", "never"), default="auto", help="dim console noise")


def add_parser(sub: Any) -> None:
    """Register ``flash``, ``deploy`` and ``monitor``."""
    add_flash_parser(sub)
    add_deploy_parser(sub)
    add_monitor_parser(sub)
