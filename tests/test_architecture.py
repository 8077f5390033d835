"""The package's shape: imports flow one way, and the pure core needs no I/O.

The import graph of host_harness is read from the source with ``ast`` (every
import, including ones deferred inside functions), so a cycle shows up even
when it would only bite at run time. Each core module is then imported in a
fresh interpreter, and the modules it pulled in are checked.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import host_harness

PACKAGE_DIR = Path(host_harness.__file__).resolve().parent
PACKAGE = "host_harness"

# Top-level modules core may not pull in: serial ports, MQTT, brokers, processes, sockets, plotting.
IO_MODULES = ("serial", "paho", "amqtt", "subprocess", "socket", "ssl", "asyncio", "matplotlib")
# Harness modules core may use besides its own: where the repo's files are.
CORE_MAY_USE = ("host_harness.core", "host_harness.paths")


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE_DIR.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py"))}


def imported(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """The harness modules ``path`` (module ``name``) imports."""
    is_pkg = path.name == "__init__.py"
    base = name.split(".") if is_pkg else name.split(".")[:-1]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                stem = ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            # "from pkg import mod" imports the module pkg.mod; "from mod import name" imports mod
            targets = [f"{stem}.{a.name}" if f"{stem}.{a.name}" in modules else stem for a in node.names]
        else:
            continue
        out |= {t for t in targets if t in modules and t != name}
    return out


def import_graph() -> dict[str, set[str]]:
    modules = all_modules()
    return {name: imported(path, name, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path that starts and ends at the same module, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                return [*path[path.index(n) :], n]
            if n not in state and (found := visit(n)):
                return found
        path.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def core_modules() -> list[str]:
    return [m for m in all_modules() if m.startswith("host_harness.core.")]


def test_the_graph_reader_sees_a_cycle_when_there_is_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None
    graph = import_graph()
    assert "host_harness.core.events" in graph["host_harness.link.serial_link"]
    assert "host_harness.dut.boards" in graph["host_harness.pytest_plugin"]


def test_the_harness_import_graph_has_no_cycles() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_core_imports_only_core() -> None:
    graph = import_graph()
    wrong = {m: sorted(n for n in graph[m] if not n.startswith(CORE_MAY_USE)) for m in core_modules()}
    assert not {m: n for m, n in wrong.items() if n}, "core modules importing outside core"


@pytest.mark.parametrize("module", core_modules())
def test_a_core_module_pulls_in_no_io(module: str) -> None:
    code = f"import json, sys, {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    loaded = json.loads(out.stdout)
    io = sorted(m for m in loaded if m.split(".")[0] in IO_MODULES)
    harness = sorted(m for m in loaded if m.startswith(f"{PACKAGE}.") and not m.startswith(CORE_MAY_USE))
    assert not io and not harness, f"{module} imports {io + harness}"


def test_every_sub_package_is_in_the_wheel() -> None:
    setup = tomllib.loads((PACKAGE_DIR.parent / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(setup["packages"])
    packages = {module_name(p) for p in PACKAGE_DIR.rglob("__init__.py") if "_data" not in p.parts}
    assert packages <= listed, f"missing from [tool.setuptools] packages: {sorted(packages - listed)}"
