"""Where the project's firmware and board definitions live.

In a checkout (an editable install, or running from the source tree) they are
the top-level ``firmware/`` and ``boards/`` folders. An installed wheel ships
them as package data under ``host_harness/_data/``. ``LIGHTCTL_ROOT`` names
another folder holding both.
"""

from __future__ import annotations

import contextlib
import os
import sys
import sysconfig
from pathlib import Path


def _package_dir() -> Path:
    here = Path(__file__).resolve()
    return next(p for p in here.parents if p.name == "host_harness")


def _root() -> Path:
    env = os.environ.get("LIGHTCTL_ROOT")
    if env:
        return Path(env).resolve()
    data = _package_dir() / "_data"
    if (data / "firmware").is_dir() and (data / "boards").is_dir():
        return data
    return _package_dir().parent


ROOT = _root()
FIRMWARE_DIR = ROOT / "firmware"
BOARDS_DIR = ROOT / "boards"


def script_dirs() -> list[Path]:
    """Where pip puts the scripts of packages installed for this Python.

    The running interpreter's own folder (a venv's or pipx's ``bin/``) and its
    scripts folders, whether or not they are on PATH: an un-activated venv is not.
    """
    dirs = [Path(sys.executable).parent, Path(sysconfig.get_path("scripts"))]
    with contextlib.suppress(KeyError):
        dirs.append(Path(sysconfig.get_path("scripts", f"{os.name}_user")))
    return list(dict.fromkeys(dirs))


def installed_script(name: str) -> Path | None:
    """``name`` as installed for this Python (see :func:`script_dirs`), or None."""
    for d in script_dirs():
        c = d / name
        if c.is_file() and os.access(c, os.X_OK):
            return c
    return None
