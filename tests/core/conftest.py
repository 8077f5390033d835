"""The core's unit tests start no process: any attempt fails the test that made it."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any, NoReturn

import pytest


@pytest.fixture(autouse=True)
def no_processes(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    def refuse(*args: Any, **kwargs: Any) -> NoReturn:
        raise AssertionError(f"a core unit test started a process: {args[1:2] or kwargs.get('args')}")

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
    yield
