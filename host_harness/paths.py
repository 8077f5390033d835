"""Where the project's firmware and board definitions live."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(os.environ.get("LIGHTCTL_ROOT") or Path(__file__).resolve().parents[1])
FIRMWARE_DIR = ROOT / "firmware"
BOARDS_DIR = ROOT / "boards"
