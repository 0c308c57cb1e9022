"""osqueue_core must stay pure: no I/O, no clock, no randomness, no event loop."""

from __future__ import annotations

import ast
from pathlib import Path

import osqueue_core

FORBIDDEN = {
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
}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_core_imports_nothing_that_does_io() -> None:
    package = Path(osqueue_core.__file__).parent
    files = sorted(package.glob("*.py"))
    assert len(files) >= 10
    offenders = {
        f.name: sorted(imported_modules(f) & FORBIDDEN)
        for f in files
        if imported_modules(f) & FORBIDDEN
    }
    assert offenders == {}


def test_the_scan_catches_a_forbidden_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import time\nfrom os import path\n")
    assert imported_modules(bad) & FORBIDDEN == {"time", "os"}
