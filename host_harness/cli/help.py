"""What every subcommand's help shares: an example epilog, the serial port option, the formatter."""

from __future__ import annotations

import argparse
from typing import Any


class HelpFormatter(argparse.HelpFormatter):
    """Descriptions wrapped to the terminal; ``example`` epilogs printed as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("example"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def example(*lines: str) -> str:
    """A subcommand's help epilog: one or more command lines."""
    return ("examples:\n" if len(lines) > 1 else "example:\n") + "\n".join(f"  {ln}" for ln in lines)


def device_option(p: argparse.ArgumentParser, help_text: str, **kwargs: Any) -> None:
    """The serial port, named ``--device`` in every subcommand (``--port`` is an alias)."""
    kwargs.setdefault("required", True)
    p.add_argument("--device", "--port", dest="device", metavar="PORT", help=help_text, **kwargs)
