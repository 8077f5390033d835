"""Constants of the firmware read from its source, so the host never keeps a copy of them.

The firmware is MicroPython (``const()``, ``micropython`` imports), so its
modules are not imported here: the assignment is found with ``ast``. Only a
module-level ``NAME = <literal>`` or ``NAME = const(<literal>)`` is accepted
(numbers, strings; bytes are returned as ASCII text).
"""

from __future__ import annotations

import ast
from functools import cache

from host_harness.paths import FIRMWARE_DIR


@cache
def firmware_constant(module: str, name: str) -> int | float | str:
    """The value of ``name`` assigned at the top of ``firmware/<module>.py``."""
    path = FIRMWARE_DIR / f"{module}.py"
    tree = ast.parse(path.read_text(), str(path))
    for node in tree.body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1):
            continue
        target = node.targets[0]
        if not (isinstance(target, ast.Name) and target.id == name):
            continue
        value = node.value
        if isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "const":
            value = value.args[0]
        result = ast.literal_eval(value)
        if isinstance(result, bytes):
            result = result.decode("ascii")
        if not isinstance(result, int | float | str):
            raise ValueError(f"firmware/{module}.py: {name} is not a number or string: {result!r}")
        return result
    raise LookupError(f"firmware/{module}.py assigns no constant {name} at module level")


def firmware_int(module: str, name: str) -> int:
    """An integer constant of the firmware (see firmware_constant)."""
    value = firmware_constant(module, name)
    if not isinstance(value, int):
        raise ValueError(f"firmware/{module}.py: {name} is not an integer: {value!r}")
    return value
