"""Board definitions (boards/*.json): pins, output kind, latency budget."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from host_harness.paths import BOARDS_DIR


def names() -> list[str]:
    return sorted(p.stem for p in BOARDS_DIR.glob("*.json"))


def load(name_or_path: str) -> dict[str, Any]:
    """A board by name (``unix``, ``esp32-devkitc``) or by the path of its JSON file."""
    p = Path(name_or_path)
    if not p.suffix:
        p = BOARDS_DIR / f"{name_or_path}.json"
    if not p.exists():
        raise ValueError(f"unknown board {name_or_path!r}; known boards: {', '.join(names())}")
    with p.open() as f:
        data: dict[str, Any] = json.load(f)
    data.setdefault("name", p.stem)
    return data
