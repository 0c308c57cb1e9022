"""The installed ``osqueue`` command, run as a subprocess, against real storage and a
real broker process.

``osqueue(*args, env=...)`` runs ``.venv/bin/osqueue`` (the console script pip made from
pyproject.toml) and returns its exit code, stdout and stderr. ``populated_queue`` starts
one broker for a test module (``--spill-jobs 4``, so some jobs live in a segment; no owner
lease, so an idle broker writes nothing) and fills it through the gRPC client with jobs
of every kind; :class:`Queue` says which ids are which.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import orjson
import pytest

from osqueue_core import DecodedState
from osqueue_io.storage import ObjectStore, open_store
from osqueue_io.sync import RemoteQueue
from tests.io.distributed.conftest import BrokerProcess, Storage

OSQUEUE = Path(sys.executable).parent / "osqueue"
RUN_TIMEOUT = 60.0


@attrs.frozen
class Ran:
    """What one ``osqueue`` run did."""

    args: tuple[str, ...]
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        assert self.code == 0, f"osqueue {' '.join(self.args)} -> {self.code}: {self.stderr}"
        return orjson.loads(self.stdout)

    def lines(self) -> list[Any]:
        """stdout as JSON lines."""
        assert self.code == 0, f"osqueue {' '.join(self.args)} -> {self.code}: {self.stderr}"
        return [orjson.loads(line) for line in self.stdout.splitlines()]

    def error_line(self) -> str:
        """The one line a failure prints on stderr (checked to be one line)."""
        lines = self.stderr.splitlines()
        assert len(lines) == 1, f"expected one error line, got: {self.stderr!r}"
        assert "Traceback" not in self.stderr
        return lines[0]


def osqueue(*args: str, env: Mapping[str, str] | None = None, cwd: Path | None = None) -> Ran:
    """Run the installed ``osqueue`` with ``args`` (in ``cwd``); no stdin, bounded time."""
    if not OSQUEUE.exists():
        pytest.fail(f"{OSQUEUE} is missing: reinstall the package (pip install -e .)")
    done = subprocess.run(
        [str(OSQUEUE), *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    return Ran(tuple(args), done.returncode, done.stdout, done.stderr)


def wait_until(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    """Poll ``check`` (a storage read) until it holds; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not seen within {timeout}s")
        time.sleep(0.05)  # polling storage for a broker's background write


@attrs.frozen
class Queue:
    """A queue a module's broker serves, and the jobs it was filled with."""

    #: ``local`` or ``s3``.
    kind: str
    data: str
    env: dict[str, str]
    options: dict[str, Any]
    broker: BrokerProcess
    #: Six plain jobs of queue ``default``, all untouched in one segment.
    plain: tuple[str, ...]
    claimed: str
    dead: str
    delayed: str
    completed: str

    def store(self) -> ObjectStore:
        return open_store(self.data, **self.options)

    def state(self) -> DecodedState:
        return _read_state(self.data, self.options)

    def run(self, *args: str) -> Ran:
        """``osqueue ARGS --data <this queue>``."""
        return osqueue(*args, "--data", self.data, env=self.env)


def populate(kind: str, data: str, env: Mapping[str, str], options: Mapping[str, Any]) -> Queue:
    """Start a broker on ``data`` and fill it (see the module docstring)."""
    broker = BrokerProcess(
        data, "--spill-jobs", "4", "--owner-lease", "0", "--heartbeat-timeout", "10m", env=env
    )
    with RemoteQueue(broker.address, bytes) as client:
        # One write of six: one spill takes all of them (the threshold is four).
        plain = tuple(client.push_many([b"plain-%d" % n for n in range(6)]))
        wait_until(lambda: bool(_read_state(data, options).segments), "the spill")
        claimed = client.push(b"held", queue="mail", priority=5)
        dead = client.push(b"doomed", queue="mail", priority=4, max_attempts=1)
        delayed = client.push(b"later", queue="mail", delay=3600)
        completed = client.push(b"done", queue="reports")
        held = client.claim(queues=["mail"])
        doomed = client.claim(queues=["mail"])
        finished = client.claim(queues=["reports"])
        assert held is not None
        assert doomed is not None
        assert finished is not None
        assert (held.id, doomed.id, finished.id) == (claimed, dead, completed)
        client.fail(doomed, "ValueError: \x1b[31mred\nsecond line", retry=False)
        client.complete(finished, b"the result")
    queue = Queue(
        kind, data, dict(env), dict(options), broker, plain, claimed, dead, delayed, completed
    )

    def settled() -> bool:
        state = _read_state(data, options)
        return bool(state.segments) and not any(job.leaving for job in state.jobs)

    wait_until(settled, "a spilled segment and the completed job archived")
    return queue


def _read_state(data: str, options: Mapping[str, Any]) -> DecodedState:
    return Storage(data, {}, options).read_state()
