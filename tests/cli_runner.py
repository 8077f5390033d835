"""The lightctl command line run from the tests as a user runs it: a subprocess, no stdin, UTF-8."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[1]
# The checkout's host_harness whatever the folder the command runs in.
ENV = dict(os.environ, PYTHONIOENCODING="utf-8", PYTHONPATH=str(CHECKOUT))


def run_cli(
    *args: str, timeout: float, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m host_harness ARGS``; its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "host_harness", *args],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        cwd=cwd,
        env=env or ENV,
    )
