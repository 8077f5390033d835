"""What every subcommand's help shares: an example epilog, the serial port option, the formatter."""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Callable
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


def subcommand(
    sub: Any, name: str, func: Callable[[argparse.Namespace], int], *examples: str
) -> argparse.ArgumentParser:
    """The parser of subcommand ``name``, which ``func`` runs: the first line of ``func``'s
    docstring is its summary in the list of commands, the rest its description;
    ``examples`` (command lines) are its epilog."""
    summary, _, description = (inspect.getdoc(func) or "").partition("\n\n")
    p = sub.add_parser(
        name, help=summary, description=description, epilog=example(*examples), formatter_class=HelpFormatter
    )
    p.set_defaults(func=func)
    return p


def picked(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    """The options ``names`` as keyword arguments, for a function whose parameters are named as they are."""
    return {name: getattr(args, name) for name in names}
