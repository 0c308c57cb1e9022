"""osqueue_core must stay pure: no I/O, no clock, no randomness, no event loop.

Two scans of every module's syntax tree: the imports (no module that does I/O or reads
the world), and the calls (no builtin that does I/O or reaches outside, no
``datetime.now()``-style clock reads through an allowed module, no ``time.*`` at all).
"""

from __future__ import annotations

import ast
from pathlib import Path

import osqueue_core

FORBIDDEN_MODULES = {
    "asyncio",
    "anyio",
    "trio",
    "time",
    "random",
    "uuid",
    "secrets",
    "os",
    "socket",
    "threading",
    "subprocess",
    "obstore",
    "grpclib",
    "io",
    "pathlib",
    "shutil",
    "sys",
    "select",
    "signal",
    "multiprocessing",
    "concurrent",
    "logging",
    "urllib",
    "http",
    "tempfile",
    "glob",
    "importlib",
    "ctypes",
}
#: Builtins that do I/O, read the environment, or run code from outside.
FORBIDDEN_CALLS = {"open", "print", "input", "exec", "eval", "compile", "__import__", "breakpoint"}
#: Methods that read a clock or the world, whatever they are called on.
FORBIDDEN_METHODS = {
    "now",
    "utcnow",
    "today",
    "time",
    "monotonic",
    "perf_counter",
    "urandom",
    "getenv",
    "random",
    "uuid4",
}


def package_files() -> list[Path]:
    return sorted(Path(osqueue_core.__file__).parent.glob("*.py"))


def imported_modules(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def forbidden_calls(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        function = node.func
        if isinstance(function, ast.Name) and function.id in FORBIDDEN_CALLS:
            found.append(f"{function.id}() at line {node.lineno}")
        elif isinstance(function, ast.Attribute) and function.attr in FORBIDDEN_METHODS:
            found.append(f".{function.attr}() at line {node.lineno}")
    return found


def parse(path: Path) -> ast.AST:
    return ast.parse(path.read_text(), filename=str(path))


def test_core_imports_nothing_that_does_io() -> None:
    files = package_files()
    assert len(files) >= 20
    offenders = {
        f.name: sorted(imported_modules(parse(f)) & FORBIDDEN_MODULES)
        for f in files
        if imported_modules(parse(f)) & FORBIDDEN_MODULES
    }
    assert offenders == {}


def test_core_calls_nothing_that_reads_the_world() -> None:
    offenders = {f.name: forbidden_calls(parse(f)) for f in package_files()}
    assert {name: calls for name, calls in offenders.items() if calls} == {}


def test_the_scans_catch_what_they_are_for() -> None:
    bad = ast.parse(
        "import time\nfrom os import path\nfrom datetime import datetime\n"
        "def f():\n    open('x')\n    return datetime.now(), print(1)\n"
    )
    assert imported_modules(bad) & FORBIDDEN_MODULES == {"time", "os"}
    assert forbidden_calls(bad) == ["open() at line 5", ".now() at line 6", "print() at line 6"]
