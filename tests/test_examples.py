"""The runnable examples run, and the custom runtime needs nothing from osqueue_io."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_embedded_example_pushes_processes_and_stops_cleanly() -> None:
    out = run("-m", "examples.embedded")
    assert "pushed 3 jobs" in out
    assert "worker-1 completed" in out
    assert out.count("worker-2 processed") == 2
    assert "queue empty: ready=0 claimed=0" in out
    assert "broker stopped cleanly" in out


def test_custom_runtime_example_drives_the_core_over_files(tmp_path: Path) -> None:
    out = run("examples/custom_runtime.py", str(tmp_path))
    assert out.count("claimed ") == 3
    assert "phase: stopped" in out
    archives = list((tmp_path / "archive").rglob("*.json"))
    assert len(archives) == 3
    assert '"released":true' in (tmp_path / "state.json").read_text()


def test_custom_runtime_imports_nothing_from_osqueue_io() -> None:
    tree = ast.parse((ROOT / "examples" / "custom_runtime.py").read_text())
    modules = {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)} | {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    assert "osqueue_core" in modules
    assert not [m for m in modules if m.startswith("osqueue_io")]
