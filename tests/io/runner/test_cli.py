"""``python -m osqueue_io.worker``: refusing bad command lines, and real worker processes
stopped with signals mid-work.

The process tests push jobs into a local directory with an embedded queue, close it
(one broker owns a directory at a time), run the worker on the same directory with
handlers from ``handlers.py``, and wait for the files those handlers write: never for a
fixed time. Afterwards they reopen the directory and account for every job.
"""

from __future__ import annotations

import base64
import contextlib
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from osqueue_core import JobInfo, JobNotFound
from osqueue_io import EmbeddedQueue, RemoteQueue
from osqueue_io.runner.cli import build_parser, main
from tests.io.archive import archived_records
from tests.io.distributed.conftest import REPO_ROOT, BrokerProcess, ChildProcess

HANDLERS = "tests.io.runner.handlers"
#: Bound on every wait for a process or a file (a hang fails, it does not block).
TIMEOUT = 20.0

FLAGS = [
    "--broker",
    "--data",
    "--queue",
    "--concurrency",
    "--grace",
    "--poll",
    "--worker-id",
    "--log-level",
    "--log-format",
    "--event-loop",
    "--tls-ca",
    "--tls",
    "--token-file",
    "--token",
]


# -- the command line ------------------------------------------------------------------


def test_help_documents_every_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit:
        main(["--help"])
    assert exit.value.code == 0
    text = capsys.readouterr().out
    for flag in FLAGS:
        assert f"{flag} " in text, flag
    assert "job.item is the payload" in " ".join(text.split())
    documented = {o for action in build_parser()._actions for o in action.option_strings}
    assert documented == {"-h", "--help", *FLAGS}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([f"{HANDLERS}:wait_for_go"], "one of the arguments --broker --data is required"),
        (
            [f"{HANDLERS}:wait_for_go", "--data", "q", "--broker", "127.0.0.1:9090"],
            "argument --broker: not allowed with argument --data",
        ),
        (["wait_for_go", "--data", "q"], "'wait_for_go' is not module:function"),
        (["no_such_module_here:handle", "--data", "q"], "cannot import module"),
        ([f"{HANDLERS}:missing", "--data", "q"], f"module '{HANDLERS}' has no 'missing'"),
        ([f"{HANDLERS}:NOT_A_FUNCTION", "--data", "q"], "is int, not a function"),
        ([f"{HANDLERS}:wait_for_go", "--data", ""], "argument --data: must not be empty"),
        ([f"{HANDLERS}:wait_for_go", "--data", "ftp://x/y"], "argument --data: "),
        ([f"{HANDLERS}:wait_for_go", "--broker", "nowhere"], "'nowhere' is not host:port"),
        ([f"{HANDLERS}:wait_for_go", "--broker", ":9090"], "':9090' is not host:port"),
        ([f"{HANDLERS}:wait_for_go", "--data", "q", "--queue", "a b"], "argument --queue: "),
        ([f"{HANDLERS}:wait_for_go", "--data", "q", "--concurrency", "0"], "from 1 to 1000"),
        ([f"{HANDLERS}:wait_for_go", "--data", "q", "--concurrency", "1001"], "from 1 to 1000"),
        ([f"{HANDLERS}:wait_for_go", "--data", "q", "--concurrency", "two"], "from 1 to 1000"),
        ([f"{HANDLERS}:wait_for_go", "--data", "q", "--grace", "-1"], "between 0 and 86400"),
        ([f"{HANDLERS}:wait_for_go", "--data", "q", "--grace", "nan"], "between 0 and 86400"),
        ([f"{HANDLERS}:wait_for_go", "--data", "q", "--grace", "soon"], "not a duration"),
        ([f"{HANDLERS}:wait_for_go", "--data", "q", "--poll", "0"], "more than 0 and at most"),
        ([f"{HANDLERS}:wait_for_go", "--data", "q", "--worker-id", ""], "must not be empty"),
        (
            [f"{HANDLERS}:wait_for_go", "--data", "q", "--worker-id", "w" * 257],
            "is 257 characters long; the limit is 256",
        ),
        ([f"{HANDLERS}:wait_for_go", "--data", "q", "--log-level", "loud"], "invalid choice"),
    ],
)
def test_a_bad_command_line_is_one_clear_error_and_status_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit:
        main(argv)
    assert exit.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("python -m osqueue_io.worker: error: ")
    assert message in error
    assert "w" * 257 not in error, "an over-long value is not echoed back"


def test_another_entry_point_names_itself_in_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main([f"{HANDLERS}:wait_for_go"], prog="my-worker")
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("my-worker: error: ")


def test_too_many_queues_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    queues = [arg for n in range(65) for arg in ("--queue", f"q{n}")]
    with pytest.raises(SystemExit) as exit:
        main([f"{HANDLERS}:wait_for_go", "--data", "q", *queues])
    assert exit.value.code == 2
    assert "at most 64 queues, got 65" in capsys.readouterr().err


def test_durations_are_accepted_the_way_the_broker_takes_them() -> None:
    args = build_parser().parse_args(
        [f"{HANDLERS}:wait_for_go", "--data", "q", "--grace", "1m30s", "--poll", "500ms"]
    )
    assert (args.grace, args.poll) == (90.0, 0.5)
    assert build_parser().parse_args([f"{HANDLERS}:h", "--data", "q", "--grace", "0"]).grace == 0


# -- real processes --------------------------------------------------------------------


@pytest.fixture
def start_worker() -> Iterator[Callable[..., ChildProcess]]:
    """Call it with a handler name from handlers.py, the --data directory (or None, then
    give --broker) and more flags to start ``python -m osqueue_io.worker``; every one
    still running is killed at the end."""
    started: list[ChildProcess] = []

    def start(handler: str, data: Path | None, *flags: str) -> ChildProcess:
        source = [] if data is None else ["--data", str(data)]
        child = ChildProcess(
            [
                sys.executable,
                "-m",
                "osqueue_io.worker",
                f"{HANDLERS}:{handler}",
                *source,
                "--poll",
                "1",
                *flags,
            ],
            # This tree's osqueue_io, whatever the virtualenv was installed from.
            env={"PYTHONPATH": str(REPO_ROOT)},
        )
        started.append(child)
        return child

    yield start
    for child in started:
        child.kill()


@pytest.fixture
def start_broker() -> Iterator[Callable[[Path], BrokerProcess]]:
    """Call it with a --data directory to start ``python -m osqueue_io.server`` on it;
    killed at the end if still running."""
    started: list[BrokerProcess] = []

    def start(data: Path) -> BrokerProcess:
        broker = BrokerProcess(str(data), env={"PYTHONPATH": str(REPO_ROOT)})
        started.append(broker)
        return broker

    yield start
    for broker in started:
        broker.kill()


def push_jobs(data: Path, control: Path, count: int) -> list[str]:
    """Push ``count`` jobs whose payload names the control directory, then close the
    queue so that the worker's broker can own the directory."""

    async def push() -> list[str]:
        async with EmbeddedQueue(data, bytes) as queue:
            return await queue.push_many([str(control).encode()] * count)

    return anyio.run(push)


def wait_for_files(control: Path, prefix: str, count: int, worker: ChildProcess) -> set[str]:
    """The job ids of the ``<prefix>-<job id>`` files once there are ``count``; fails if
    the worker exits first or after ``TIMEOUT`` seconds."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        ids = {path.name.removeprefix(f"{prefix}-") for path in control.glob(f"{prefix}-*")}
        if len(ids) >= count:
            return ids
        if worker.process.poll() is not None or time.monotonic() > deadline:
            worker.collect()
            pytest.fail(f"{len(ids)} of {count} {prefix!r} files:\n{worker.text}")
        time.sleep(0.02)  # polling the files the handlers write


def marked(control: Path, prefix: str) -> set[str]:
    return {path.name.removeprefix(f"{prefix}-") for path in control.glob(f"{prefix}-*")}


def reopen(data: Path, job_ids: list[str]) -> tuple[dict[str, JobInfo], dict[str, Any], int]:
    """After the worker exited: each job still in the state (by id), the archive records
    (by id; a job archived twice fails the test) and how many jobs are held."""

    async def look() -> tuple[dict[str, JobInfo], dict[str, Any], int]:
        async with EmbeddedQueue(data, bytes) as queue:
            with anyio.fail_after(TIMEOUT):
                await queue.runtime.wait_until(lambda s: s.finished_pending_archive == 0)
            live: dict[str, JobInfo] = {}
            for job_id in job_ids:
                with contextlib.suppress(JobNotFound):  # archived
                    live[job_id] = await queue.get(job_id)
            records = await archived_records(queue.runtime.store)
            claimed = queue.stats().claimed
        by_id = {record["id"]: record for record in records}
        assert len(by_id) == len(records), "a job was archived twice"
        return live, by_id, claimed

    return anyio.run(look)


def assert_ready_and_unattempted(live: dict[str, JobInfo], job_ids: set[str]) -> None:
    for job_id in job_ids:
        info = live[job_id]
        assert (info.status, info.attempts, info.holder) == ("ready", 0, None), job_id


def test_sigterm_mid_work_lets_handlers_finish_and_loses_nothing(
    tmp_path: Path, start_worker: Callable[..., ChildProcess]
) -> None:
    data, control = tmp_path / "queue", tmp_path / "control"
    control.mkdir()
    job_ids = push_jobs(data, control, 10)
    worker = start_worker("wait_for_go", data, "--concurrency", "4", "--grace", "30")
    # Four handlers mid-work at once: each waits for a file only the test creates.
    running = wait_for_files(control, "started", 4, worker)
    worker.send_signal(signal.SIGTERM)
    worker.wait_for_line("SIGTERM: stopping", TIMEOUT)
    (control / "go").touch()
    assert worker.wait(TIMEOUT) == 0, worker.text
    assert marked(control, "started") == running, "nothing started after the signal"
    assert marked(control, "finished") == running
    assert "4 completed, 0 failed, 0 cancelled, 0 released" in worker.text

    live, archived, claimed = reopen(data, job_ids)
    assert claimed == 0
    assert set(archived) == running
    for job_id in running:
        assert archived[job_id]["status"] == "completed"
        assert base64.b64decode(archived[job_id]["result"]) == f"done {job_id}".encode()
    assert set(live) == set(job_ids) - running
    assert_ready_and_unattempted(live, set(live))


def test_sigterm_mid_work_against_a_grpc_broker_loses_nothing(
    tmp_path: Path,
    start_worker: Callable[..., ChildProcess],
    start_broker: Callable[[Path], BrokerProcess],
) -> None:
    data, control = tmp_path / "queue", tmp_path / "control"
    control.mkdir()
    job_ids = push_jobs(data, control, 6)
    broker = start_broker(data)
    worker = start_worker("wait_for_go", None, "--broker", broker.address, "--concurrency", "3")
    running = wait_for_files(control, "started", 3, worker)
    worker.send_signal(signal.SIGTERM)
    worker.wait_for_line("SIGTERM: stopping", TIMEOUT)
    (control / "go").touch()
    assert worker.wait(TIMEOUT) == 0, worker.text
    assert broker.terminate() == 0, broker.text
    assert marked(control, "started") == running
    assert "3 completed, 0 failed, 0 cancelled, 0 released" in worker.text

    live, archived, claimed = reopen(data, job_ids)
    assert claimed == 0
    assert set(archived) == running
    for job_id in running:
        assert base64.b64decode(archived[job_id]["result"]) == f"done {job_id}".encode()
    assert set(live) == set(job_ids) - running
    assert_ready_and_unattempted(live, set(live))


def test_sigterm_cancels_the_claim_an_idle_worker_has_waiting_at_the_broker(
    tmp_path: Path,
    start_worker: Callable[..., ChildProcess],
    start_broker: Callable[[Path], BrokerProcess],
) -> None:
    broker = start_broker(tmp_path / "queue")

    async def waiting_claims() -> int:
        async with RemoteQueue(broker.address, bytes) as queue:
            return (await queue.stats()).waiting_claims

    # A claim that would wait ten minutes for a job.
    worker = start_worker("wait_for_go", None, "--broker", broker.address, "--poll", "600")
    deadline = time.monotonic() + TIMEOUT
    while anyio.run(waiting_claims) != 1:
        assert worker.process.poll() is None, worker.text
        assert time.monotonic() < deadline, "the worker's claim never reached the broker"
        time.sleep(0.02)  # polling the broker's count of waiting claims
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(TIMEOUT) == 0, worker.text

    async def push_after_the_worker_left() -> JobInfo:
        async with RemoteQueue(broker.address, bytes) as queue:
            assert (await queue.stats()).waiting_claims == 0
            return await queue.get(await queue.push(str(tmp_path).encode()))

    info = anyio.run(push_after_the_worker_left)
    assert (info.status, info.attempts, info.holder) == ("ready", 0, None)


@pytest.mark.parametrize("handler", ["never_finishes", "never_finishes_in_a_thread"])
def test_grace_expiry_releases_handlers_that_never_finish_and_exits_0(
    tmp_path: Path, start_worker: Callable[..., ChildProcess], handler: str
) -> None:
    data, control = tmp_path / "queue", tmp_path / "control"
    control.mkdir()
    job_ids = push_jobs(data, control, 3)
    worker = start_worker(handler, data, "--concurrency", "2", "--grace", "0.2")
    running = wait_for_files(control, "started", 2, worker)
    worker.send_signal(signal.SIGTERM)
    # A thread that never returns does not keep the process alive either.
    assert worker.wait(TIMEOUT) == 0, worker.text
    assert "2 released (2 interrupted), 0 lost" in worker.text
    if handler == "never_finishes":
        assert marked(control, "interrupted") == running, "the async handlers were cancelled"
    else:
        assert "2 threads left running" in worker.text

    live, archived, claimed = reopen(data, job_ids)
    assert (claimed, archived) == (0, {})
    assert set(live) == set(job_ids)
    assert_ready_and_unattempted(live, set(job_ids))


def test_a_second_signal_skips_the_grace_period(
    tmp_path: Path, start_worker: Callable[..., ChildProcess]
) -> None:
    data, control = tmp_path / "queue", tmp_path / "control"
    control.mkdir()
    job_ids = push_jobs(data, control, 1)
    worker = start_worker("never_finishes", data, "--grace", "600")
    running = wait_for_files(control, "started", 1, worker)
    worker.send_signal(signal.SIGTERM)
    worker.wait_for_line("waiting up to 600s for 1 running handler", TIMEOUT)
    worker.send_signal(signal.SIGINT)
    assert worker.wait(TIMEOUT) == 0, worker.text
    assert "SIGINT again: stopping now" in worker.text
    assert marked(control, "interrupted") == running

    live, archived, claimed = reopen(data, job_ids)
    assert (claimed, archived) == (0, {})
    assert_ready_and_unattempted(live, set(job_ids))


def test_a_worker_whose_queue_cannot_be_opened_exits_1(
    tmp_path: Path, start_worker: Callable[..., ChildProcess]
) -> None:
    data, control = tmp_path / "queue", tmp_path / "control"
    control.mkdir()
    push_jobs(data, control, 1)
    (data / "state.json").unlink()  # the queue has history: the broker refuses to start
    worker = start_worker("wait_for_go", data)
    assert worker.wait(TIMEOUT) == 1
    [line] = [line for line in worker.output if "the worker failed: " in line]
    assert "state" in line
    assert marked(control, "started") == set()
