"""``lightctl`` (or ``python -m host_harness``): run, sim, flash, deploy, monitor."""

from __future__ import annotations

import argparse
import os
import sys

from host_harness.cli import hil, run, signals, sim
from host_harness.cli.help import HelpFormatter
from host_harness.dut import labgrid_place

DESCRIPTION = "Measure and poke a MicroPython light over MQTT and serial: the lightctl host harness."
EPILOG = """\
examples:
  lightctl sim                                   a Unix-port light on a local broker
  lightctl run --count 100                       measure journeys against the budget
  lightctl deploy --device /dev/ttyUSB0 --board esp32-devkitc --config device.json
  lightctl <command> --help                      a command's options and an example
"""


def version() -> str:
    """The installed distribution's version, or the source tree's when it is not installed."""
    from importlib import metadata

    try:
        return metadata.version("lightctl")
    except metadata.PackageNotFoundError:
        return "0+unknown (not installed)"


def prog_name(argv0: str | None = None) -> str:
    """``lightctl`` when run as that script, else ``python -m host_harness``."""
    name = os.path.basename(argv0 if argv0 is not None else sys.argv[0])
    return "lightctl" if name == "lightctl" else "python -m host_harness"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog_name(),
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=HelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = p.add_subparsers(dest="cmd", title="commands", metavar="<command>")
    run.add_parser(sub)
    sim.add_parser(sub)
    hil.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.cmd is None:  # bare `lightctl`: what it can do
        p.print_help()
        return 0
    restore = signals.install()
    labgrid_place.set_coordinator(getattr(args, "lg_coordinator", None))
    try:
        return int(args.func(args))
    except signals.Interrupted as stop:  # cleaned up on the way here; the handler said why
        return stop.exit_code
    except (ConnectionError, TimeoutError, FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        restore()


if __name__ == "__main__":
    sys.exit(main())
