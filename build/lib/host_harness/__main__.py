"""python -m host_harness {run,sim} ..."""

from __future__ import annotations

import argparse
import sys

from host_harness.cli import hil, run, sim


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m host_harness", description="lightctl host harness")
    sub = p.add_subparsers(dest="cmd", required=True)
    run.add_parser(sub)
    sim.add_parser(sub)
    hil.add_parser(sub)
    args = p.parse_args(argv)
    try:
        return int(args.func(args))
    except (ConnectionError, TimeoutError, FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
