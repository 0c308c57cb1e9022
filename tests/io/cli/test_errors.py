"""What ``osqueue`` says and returns when something is wrong: one line on stderr that
says what to fix, the documented exit code, never a traceback, and never more than a few
dozen characters of what it was given."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import anyio
import orjson
import pytest

from osqueue_core import untouched_positions
from osqueue_io.storage import LocalFileStore
from tests.io.cli.conftest import osqueue, populate

LONG = "x" * 5000
#: Hour ranges whose buckets (UTC) fall in years 0 and 10,000: out of datetime's range.
YEAR_ONE = ("--since", "0001-01-01T00:00+01:00", "--until", "0001-01-01T01:00+01:00")
YEAR_9999 = ("--since", "9999-12-31T00:00-12:00", "--until", "9999-12-31T23:59:59-12:00")


def _store_with_state(root: Path, data: bytes) -> str:
    async def write() -> None:
        await LocalFileStore(root).create("state.json", data)

    anyio.run(write)
    return str(root)


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (("stats",), 2, "give --data URL"),
        (("stats", "--data", "/nonexistent/queue"), 2, "does not exist"),
        (("stats", "--data", "memory://"), 2, "memory:// lives inside one process"),
        (("jobs", "show", LONG, "--data", "."), 2, "the limit is 256"),
        (("jobs", "ls", "--queue", "bad queue!", "--data", "."), 2, "queue"),
        (("jobs", "ls", "--limit", "100001", "--data", "."), 2, "--limit"),
        (("archive", "cat", "--since", "yesterday-ish", "--data", "."), 2, "ISO 8601"),
        (("archive", "cat", "--since", "1h", "--until", "2h", "--data", "."), 2, "before"),
        (("archive", "cat", "--since", "2020-01-01", "--data", "."), 2, "scan it in parts"),
        (("archive", "cat", "--since", LONG, "--data", "."), 2, "too long"),
        (("archive", "ls", *YEAR_ONE, "--data", "."), 2, "1970"),
        (("archive", "cat", *YEAR_9999, "--data", "."), 2, "9998"),
        (("cancel", "x", "--broker", "not-an-address"), 2, "HOST:PORT"),
        (("cancel", "x", "--timeout", "nan", "--broker", "127.0.0.1:1"), 2, "--timeout"),
        (("cancel", "x", "--timeout", "nan", "--data", "."), 2, "--timeout"),
        (("dead", "redrive", "--broker", "127.0.0.1:1"), 2, "not both and not neither"),
        (("dead", "purge", "--state-key", "../escape", "--data", "."), 2, "--state-key"),
        ((LONG,), 2, "No such command"),
    ],
)
def test_usage_errors(args: tuple[str, ...], code: int, says: str) -> None:
    ran = osqueue(*args)
    assert ran.code == code, ran.stderr
    line = ran.error_line()
    assert says in line
    assert line.startswith("osqueue")
    assert len(line) < 500  # the 5,000-character inputs are clipped
    assert ran.stdout == ""


def test_no_state_object_is_not_found(tmp_path: Path) -> None:
    (tmp_path / "queue").mkdir()
    ran = osqueue("stats", "--data", str(tmp_path / "queue"))
    assert ran.code == 3
    assert "no state object 'state.json'" in ran.error_line()
    assert list((tmp_path / "queue").iterdir()) == []  # a read created nothing


def test_a_corrupt_state_is_unreadable(tmp_path: Path) -> None:
    data = _store_with_state(tmp_path / "queue", b'{"schema_version": 2, "revision": "x"}')
    ran = osqueue("jobs", "ls", "--data", data)
    assert ran.code == 4
    assert "osqueue jobs ls: error: the state object" in ran.error_line()


def test_a_newer_state_is_unreadable(tmp_path: Path) -> None:
    newer = orjson.dumps({"schema_version": 99, "revision": 1, "jobs": []})
    ran = osqueue("stats", "--data", _store_with_state(tmp_path / "queue", newer))
    assert ran.code == 4
    assert "upgrade osqueue" in ran.error_line()


def test_changes_without_a_running_broker_fail_at_once(tmp_path: Path) -> None:
    state = {
        "schema_version": 4,
        "revision": 3,
        "owner": {"identity": "gone:1", "incarnation": "i", "epoch": 1, "released": True},
        "next_seq": 0,
        "jobs": [],
    }
    data = _store_with_state(tmp_path / "queue", orjson.dumps(state))
    ran = osqueue("cancel", "000000000001-1", "--data", data)
    assert ran.code == 1
    assert "stopped cleanly; start one" in ran.error_line()
    refused = osqueue("cancel", "000000000001-1", "--broker", "127.0.0.1:9")
    assert refused.code == 1
    refused.error_line()


def test_server_and_worker_are_the_broker_and_runner_command_lines() -> None:
    server_help = osqueue("server", "--help")
    assert server_help.code == 0
    direct = subprocess.run(
        [sys.executable, "-m", "osqueue_io.server", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert server_help.stdout.startswith("usage: osqueue server")
    assert direct.stdout.startswith("usage: python -m osqueue_io.server")
    # The same command line, only named as it was run.
    named = direct.stdout.replace("python -m osqueue_io.server", "osqueue server")
    assert " ".join(server_help.stdout.split()) == " ".join(named.split())
    worker_help = osqueue("worker", "--help")
    assert worker_help.code == 0
    assert worker_help.stdout.startswith("usage: osqueue worker")
    bad = osqueue("server", "--listen", "nowhere")
    assert bad.code == 2
    assert "--listen" in bad.stderr
    assert bad.stderr.startswith("usage: osqueue server")


def test_help_has_examples() -> None:
    for command in (("--help",), ("stats", "--help"), ("archive", "cat", "--help")):
        ran = osqueue(*command)
        assert ran.code == 0
        assert "Examples:" in ran.stdout
    assert "Exit codes" in osqueue("--help").stdout


def test_python_dash_m_runs_the_same_command(tmp_path: Path) -> None:
    ran = subprocess.run(
        [sys.executable, "-m", "osqueue_io.cli", "stats", "--data", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ran.returncode == 3
    assert ran.stderr.startswith("osqueue stats: error: no state object")


def test_reads_write_nothing_and_a_missing_segment_is_unreadable(tmp_path: Path) -> None:
    """Every read leaves a stopped queue's files as they were; then its segment is
    deleted by hand, and the state still refers to it."""
    queue = populate("local", str(tmp_path / "queue"), {}, {})
    queue.broker.kill()
    copy = tmp_path / "copy"
    shutil.copytree(tmp_path / "queue", copy)
    segments = sorted(p.name for p in (copy / "segments").iterdir() if not p.name.startswith("."))
    refs = queue.state().segments
    # The plain jobs' segment, and the delayed job's of its own (segments stage 2).
    assert segments == sorted(ref.key.removeprefix("segments/") for ref in refs)
    [plain] = [ref for ref in refs if ref.due is None]
    untouched = sum(len(untouched_positions(ref)) for ref in refs)
    before = _files(copy)
    for args in (
        ("stats", "--json"),
        ("jobs", "ls"),
        ("jobs", "show", queue.plain[0], "--json"),
        ("dead", "ls"),
        ("archive", "ls", "--since", "2h"),
        ("archive", "cat", "--since", "2h"),
    ):
        ran = osqueue(*args, "--data", str(copy))
        assert ran.code == 0, ran.stderr
    assert _files(copy) == before  # reads wrote nothing, not even a lock file

    (copy / plain.key).unlink()
    ran = osqueue("jobs", "ls", "--data", str(copy))
    assert ran.code == 4
    assert "is referenced by the state but missing" in ran.error_line()
    # Needs no segment: neither the missing one nor the delayed one, not yet in its
    # due range.
    stats = osqueue("stats", "--data", str(copy), "--json")
    assert stats.code == 0, stats.stderr
    assert stats.json()["untouched"] == untouched >= 7


def _files(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(path.relative_to(root)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in sorted(root.rglob("*"))
    }
