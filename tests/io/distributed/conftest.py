"""Brokers as real subprocesses on 127.0.0.1, and a way to look at the state they leave.

``start_broker(data, *flags)`` runs ``python -m osqueue_io.server --listen 127.0.0.1:0``
(or a given port), reads the port the broker logs once it serves, checks that it
accepts connections, and returns a :class:`BrokerProcess`. Every broker a test started
is killed at its end. ``run_worker(mode, address, ...)`` starts a worker process from
``tests/io/distributed/workers.py``. ``stored_records(data)`` reads every job record a
queue holds, while its broker may still be writing.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest

from osqueue_core import DecodedState, decode_state
from osqueue_io.storage import open_store
from tests.io.archive import archived_records
from tests.io.conftest import S3Server, fresh_prefix, wait_for_port

REPO_ROOT = Path(__file__).resolve().parents[3]
START_TIMEOUT = 20.0
_LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")


class ChildProcess:
    """A child whose merged stdout/stderr is read line by line on a thread (so the pipe
    never fills); tests wait for lines with a bounded timeout."""

    def __init__(self, args: list[str], env: Mapping[str, str] | None = None) -> None:
        self.args = args
        self.process = subprocess.Popen(
            args,
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        self.output: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    @property
    def text(self) -> str:
        return "\n".join(self.output)

    def wait_for_line(self, pattern: str | re.Pattern[str], timeout: float) -> re.Match[str]:
        """The first new line matching ``pattern``; fails after ``timeout`` seconds or
        when the process ends without printing one."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                break
            if line is None:
                self._lines.put(None)  # stays at the end for later readers
                pytest.fail(
                    f"{self.args[2:]} exited ({self.process.wait()}) before printing "
                    f"{regex.pattern!r}:\n{self.text}"
                )
            self.output.append(line)
            if match := regex.search(line):
                return match
        pytest.fail(f"{self.args[2:]} printed no {regex.pattern!r} in {timeout}s:\n{self.text}")

    def lines_matching(self, pattern: str) -> list[re.Match[str]]:
        """Every line read so far (and everything left once the process ended)."""
        regex = re.compile(pattern)
        self.collect()
        return [m for line in self.output if (m := regex.search(line))]

    def collect(self) -> None:
        """Move every line already printed into ``output`` (all of them once ended)."""
        while True:
            try:
                line = self._lines.get(timeout=0 if self.process.poll() is None else 5)
            except queue.Empty:
                return
            if line is None:
                self._lines.put(None)
                return
            self.output.append(line)

    def wait(self, timeout: float) -> int:
        """The exit code; fails if the process is still running after ``timeout``."""
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.collect()
            pytest.fail(f"{self.args[2:]} still running after {timeout}s:\n{self.text}")
        self.collect()
        return code

    def send_signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


def server_args(data: str, *flags: str, port: int = 0) -> list[str]:
    """The command line of a broker on ``127.0.0.1:port`` (0: a free port) and ``data``."""
    return [
        sys.executable,
        "-m",
        "osqueue_io.server",
        "--listen",
        f"127.0.0.1:{port}",
        "--data",
        data,
        *flags,
    ]


class BrokerProcess(ChildProcess):
    """``python -m osqueue_io.server`` serving on 127.0.0.1."""

    def __init__(self, data: str, *flags: str, port: int = 0, env: Mapping[str, str] | None = None):
        super().__init__(server_args(data, *flags, port=port), env)
        self.data = data
        self.port = int(self.wait_for_line(_LISTENING, START_TIMEOUT).group(1))
        wait_for_port("127.0.0.1", self.port, START_TIMEOUT)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM, then the exit code."""
        self.send_signal(signal.SIGTERM)
        return self.wait(timeout)


@pytest.fixture
def start_broker() -> Iterator[Callable[..., BrokerProcess]]:
    """Call it to start a broker (see :class:`BrokerProcess`); all are killed at the end."""
    started: list[ChildProcess] = []

    def start(data: str, *flags: str, **options: Any) -> BrokerProcess:
        broker = BrokerProcess(data, *flags, **options)
        started.append(broker)
        return broker

    yield start
    for child in started:
        child.kill()


@pytest.fixture
def run_worker() -> Iterator[Callable[..., ChildProcess]]:
    """Call it to start ``workers.py MODE ADDRESS ARGS...``; all are killed at the end."""
    started: list[ChildProcess] = []

    def run(mode: str, address: str, *args: str) -> ChildProcess:
        child = ChildProcess(
            [sys.executable, "-m", "tests.io.distributed.workers", mode, address, *args]
        )
        started.append(child)
        return child

    yield run
    for child in started:
        child.kill()


# -- storage -------------------------------------------------------------------------


async def stored_records(data: str) -> list[dict[str, Any]]:
    """Every job record of the queue at ``data``, in its state and its archive, read
    while its broker may still run. The state is read first: a job leaves it only once
    archived, so one that finishes between the two reads is found in the archive
    (read the other way round, it would be in neither). A job in both (archived, not
    yet dropped from the state) is one record, the archived one; repeats within the
    archive are kept (there must be none)."""
    store = open_store(data)
    try:
        found = await store.read("state.json")
        assert found is not None, f"no state object in {data}"
        state = orjson.loads(found.data)
        assert "segments" not in state, "spilled: count those too"
        archived = await archived_records(store)
    finally:
        await store.aclose()
    seen = {record["id"] for record in archived}
    return [*archived, *(record for record in state["jobs"] if record["id"] not in seen)]


class Storage:
    """Where a test's broker keeps its queue: ``data`` for ``--data``, ``env`` for the
    broker process, and :meth:`read_state` to inspect what it left behind."""

    def __init__(self, data: str, env: Mapping[str, str], options: Mapping[str, Any]) -> None:
        self.data = data
        self.env = dict(env)
        self.options = dict(options)

    async def aread_state(self) -> DecodedState:
        store = open_store(self.data, **self.options)
        try:
            found = await store.read("state.json")
        finally:
            await store.aclose()
        assert found is not None, f"no state object in {self.data}"
        return decode_state(found.data)

    def read_state(self) -> DecodedState:
        return anyio.run(self.aread_state)


@pytest.fixture
def local_storage(tmp_path: Path) -> Storage:
    return Storage(str(tmp_path / "queue"), {}, {})


@pytest.fixture
def s3_storage(moto_s3: S3Server) -> Storage:
    return Storage(moto_s3.url(fresh_prefix()), moto_s3.env, moto_s3.options)
