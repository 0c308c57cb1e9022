"""``run_worker`` against the embedded queue, on memory and on a local directory.

Handlers signal the test through events (and, for threads, ``threading`` primitives);
the test never sleeps to let something happen. A stop event ends each run, so every
test gets a ``RunSummary`` to check along with the jobs' state and archive records.
"""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
import pytest

from osqueue_core import (
    MAX_CLAIM_WAIT,
    BrokerConfig,
    InvalidArgument,
    JobInfo,
    JobNotFound,
    LeaseLost,
    RetryPolicy,
    StorageUnavailable,
)
from osqueue_io import ClaimedJob, EmbeddedQueue, RunSummary, run_worker
from osqueue_io.client import JobQueue
from tests.io.archive import archived_records

pytestmark = pytest.mark.anyio

WORKER = "runner-test"
#: Every wait in these tests is bounded by this (a hang fails, it does not block).
TIMEOUT = 10.0


@pytest.fixture(params=["memory", "local"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return "memory://" if request.param == "memory" else str(tmp_path / "queue")


def open_queue(
    url: str, config: BrokerConfig | None = None, **options: Any
) -> EmbeddedQueue[bytes]:
    return EmbeddedQueue(url, bytes, config=config, worker_id=WORKER, **options)


async def run(queue: JobQueue[bytes], handler: Any, **options: Any) -> RunSummary:
    """``run_worker`` with a short poll, bounded by ``TIMEOUT``."""
    with anyio.fail_after(TIMEOUT):
        return await run_worker(queue, handler, poll=0.5, **options)


async def archived(queue: EmbeddedQueue[bytes]) -> dict[str, dict[str, Any]]:
    """The archive records by job id, once every finished job is archived; a job
    archived twice fails the test."""
    with anyio.fail_after(TIMEOUT):
        await queue.runtime.wait_until(lambda s: s.finished_pending_archive == 0)
    records = await archived_records(queue.runtime.store)
    by_id = {record["id"]: record for record in records}
    assert len(by_id) == len(records), "a job was archived twice"
    return by_id


async def assert_back_to_ready(queue: EmbeddedQueue[bytes], job_ids: list[str]) -> None:
    """Each job is ready again, held by nobody, with no attempt counted."""
    for job_id in job_ids:
        info: JobInfo = await queue.get(job_id)
        assert (info.status, info.attempts, info.holder) == ("ready", 0, None), job_id
    assert queue.stats().claimed == 0


async def status_or_archived(queue: EmbeddedQueue[bytes], job_id: str) -> str:
    """The job's status, or "archived" once it has left the state."""
    try:
        return (await queue.get(job_id)).status
    except JobNotFound:
        return "archived"


# -- running handlers ------------------------------------------------------------------


async def test_an_async_handler_completes_each_job_with_its_bytes_result(url: str) -> None:
    async with open_queue(url) as queue:
        items = [b"a", b"b", b"c"]
        job_ids = await queue.push_many(items)
        stop = anyio.Event()
        seen: list[str] = []

        async def handler(job: ClaimedJob[bytes]) -> bytes:
            seen.append(job.id)
            if len(seen) == len(items):
                stop.set()
            return b"result of " + job.item

        summary = await run(queue, handler, stop=stop)
        assert summary == RunSummary(completed=3)
        records = await archived(queue)
        assert sorted(records) == sorted(job_ids)
        for job_id, item in zip(job_ids, items, strict=True):
            assert records[job_id]["status"] == "completed"
            assert base64.b64decode(records[job_id]["result"]) == b"result of " + item


async def test_a_handler_returning_none_stores_no_result(url: str) -> None:
    async with open_queue(url) as queue:
        job_id = await queue.push(b"x")
        stop = anyio.Event()

        async def handler(job: ClaimedJob[bytes]) -> None:
            stop.set()

        assert await run(queue, handler, stop=stop) == RunSummary(completed=1)
        record = (await archived(queue))[job_id]
        assert record["status"] == "completed"
        assert "result" not in record


async def test_async_handlers_run_up_to_the_concurrency_and_never_more(url: str) -> None:
    async with open_queue(url) as queue:
        await queue.push_many([b"%d" % n for n in range(6)])
        stop = anyio.Event()
        three_at_once = anyio.Event()
        running = peak = done = 0

        async def handler(job: ClaimedJob[bytes]) -> None:
            nonlocal running, peak, done
            running += 1
            peak = max(peak, running)
            if running == 3:
                three_at_once.set()
            # No handler finishes before three run at once: with fewer slots this
            # would never be set, and the run would time out.
            await three_at_once.wait()
            running -= 1
            done += 1
            if done == 6:
                stop.set()

        summary = await run(queue, handler, concurrency=3, stop=stop)
        assert summary == RunSummary(completed=6)
        assert peak == 3


async def test_plain_functions_run_in_worker_threads_up_to_the_concurrency(url: str) -> None:
    async with open_queue(url) as queue:
        job_ids = await queue.push_many([b"%d" % n for n in range(8)])
        stop = anyio.Event()
        # Four threads must wait here together; with fewer at once it breaks after its
        # timeout and the jobs fail (BrokenBarrierError).
        four_at_once = threading.Barrier(4, timeout=TIMEOUT)
        lock = threading.Lock()
        running = peak = done = 0
        threads: set[int] = set()

        def handler(job: ClaimedJob[bytes]) -> bytes:
            nonlocal running, peak, done
            assert threading.current_thread() is not threading.main_thread()
            with lock:
                running += 1
                peak = max(peak, running)
                threads.add(threading.get_ident())
            four_at_once.wait()
            with lock:
                running -= 1
                done += 1
                finished = done
            if finished == 8:
                anyio.from_thread.run_sync(stop.set)
            return job.item * 2

        summary = await run(queue, handler, concurrency=4, stop=stop)
        assert summary == RunSummary(completed=8)
        assert peak == 4
        assert len(threads) >= 4
        records = await archived(queue)
        assert {base64.b64decode(records[i]["result"]) for i in job_ids} == {
            b"%d%d" % (n, n) for n in range(8)
        }


# -- failures --------------------------------------------------------------------------


async def test_a_raising_handler_is_retried_then_dead_with_the_exception_text(url: str) -> None:
    config = BrokerConfig(retry=RetryPolicy(base=0, cap=0, max_attempts=3))
    async with open_queue(url, config) as queue:
        job_id = await queue.push(b"x")
        stop = anyio.Event()
        attempts: list[int] = []

        async def handler(job: ClaimedJob[bytes]) -> None:
            attempts.append(job.attempts)
            if job.attempts == 3:
                stop.set()  # the failure below is still recorded: stopping waits for it
            raise ValueError(f"boom on attempt {job.attempts}")

        summary = await run(queue, handler, stop=stop)
        assert summary == RunSummary(failed=3)
        assert attempts == [1, 2, 3]
        info = await queue.get(job_id)
        assert (info.status, info.attempts) == ("dead", 3)
        assert info.last_error == "ValueError: boom on attempt 3"
        assert [letter.id for letter in await queue.dead_letters()] == [job_id]


# Each makes a handler that stops the run it is in, then returns something else than bytes.
def _returns_an_int(stop: anyio.Event) -> Callable[[ClaimedJob[bytes]], object]:
    async def handler(job: ClaimedJob[bytes]) -> int:
        stop.set()
        return 42

    return handler


def _returns_text_from_a_thread(stop: anyio.Event) -> Callable[[ClaimedJob[bytes]], object]:
    def handler(job: ClaimedJob[bytes]) -> str:
        anyio.from_thread.run_sync(stop.set)
        return "text"

    return handler


def _returns_a_coroutine_from_a_thread(stop: anyio.Event) -> Callable[[ClaimedJob[bytes]], object]:
    def handler(job: ClaimedJob[bytes]) -> Awaitable[None]:
        anyio.from_thread.run_sync(stop.set)
        # A plain function handing back a coroutine, not an `async def` handler.
        return anyio.lowlevel.checkpoint()

    return handler


@pytest.mark.parametrize(
    ("make_handler", "error"),
    [
        (_returns_an_int, "TypeError: the handler returned int: return bytes or None"),
        (_returns_text_from_a_thread, "TypeError: the handler returned str: return bytes or None"),
        (_returns_a_coroutine_from_a_thread, "TypeError: the handler is a plain function that"),
    ],
)
async def test_a_result_that_is_not_bytes_makes_the_job_dead_at_once(
    url: str, make_handler: Callable[[anyio.Event], Callable[..., object]], error: str
) -> None:
    async with open_queue(url) as queue:
        job_id = await queue.push(b"x")
        stop = anyio.Event()
        summary = await run(queue, make_handler(stop), stop=stop)
        assert summary == RunSummary(failed=1)
        info = await queue.get(job_id)
        assert (info.status, info.attempts) == ("dead", 1), "no retry: it would fail alike"
        assert info.last_error is not None
        assert info.last_error.startswith(error)


async def test_a_result_the_broker_refuses_makes_the_job_dead(url: str) -> None:
    async with open_queue(url, BrokerConfig(max_result_bytes=10)) as queue:
        job_id = await queue.push(b"x")
        stop = anyio.Event()

        async def handler(job: ClaimedJob[bytes]) -> bytes:
            stop.set()
            return b"eleven bytes"

        assert await run(queue, handler, stop=stop) == RunSummary(failed=1)
        info = await queue.get(job_id)
        assert (info.status, info.attempts) == ("dead", 1)
        assert info.last_error is not None
        assert info.last_error.startswith("PayloadTooLarge: ")


async def test_a_lost_lease_is_counted_and_the_job_left_alone(url: str) -> None:
    async with open_queue(url) as queue:
        job_id = await queue.push(b"x")
        stop = anyio.Event()

        async def handler(job: ClaimedJob[bytes]) -> None:
            stop.set()
            raise LeaseLost(job.id, job.worker_id)

        assert await run(queue, handler, stop=stop) == RunSummary(lost=1)
        info = await queue.get(job_id)
        # Neither failed nor completed: the job is somebody else's once the lease is gone.
        assert (info.status, info.holder, info.last_error) == ("claimed", WORKER, None)


# -- cancel ----------------------------------------------------------------------------


async def test_a_job_cancelled_mid_handler_stops_the_handler_and_ends_cancelled(url: str) -> None:
    async with open_queue(url, heartbeat_interval=0.05) as queue:
        job_id = await queue.push(b"x")
        stop = anyio.Event()
        started = anyio.Event()
        handler_cancelled = anyio.Event()

        async def handler(job: ClaimedJob[bytes]) -> bytes:
            started.set()
            try:
                await anyio.sleep_forever()
            finally:
                handler_cancelled.set()
            return b"never"

        async def cancel_it() -> None:
            await started.wait()
            assert await queue.cancel(job_id) is False, "claimed: its worker learns it"
            await handler_cancelled.wait()
            stop.set()

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(cancel_it)
            summary = await run(queue, handler, stop=stop)
        assert summary == RunSummary(cancelled=1)
        record = (await archived(queue))[job_id]
        assert record["status"] == "cancelled"
        assert "result" not in record


class _LogSeen(logging.Handler):
    """Sets ``seen`` when the runner logs a message containing ``text``."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.seen.set()


class _CountClaimsWhile:
    """A queue that counts the claims made while ``condition()`` holds."""

    def __init__(self, queue: EmbeddedQueue[bytes], condition: Callable[[], bool]) -> None:
        self._queue = queue
        self._condition = condition
        self.claims = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._queue, name)

    async def claim_many(self, count: int, **options: Any) -> list[ClaimedJob[bytes]]:
        self.claims += self._condition()
        return await self._queue.claim_many(count, **options)


async def test_a_cancelled_plain_handler_keeps_its_slot_until_its_thread_returns(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="osqueue.runner")
    async with open_queue(url, heartbeat_interval=0.05) as queue:
        first, second = await queue.push_many([b"first", b"second"])
        stop = anyio.Event()
        first_started = threading.Event()
        unblock_first = threading.Event()
        first_returned = threading.Event()
        second_saw_first_returned: list[bool] = []

        def handler(job: ClaimedJob[bytes]) -> bytes:
            if job.item == b"first":
                first_started.set()
                unblock_first.wait(TIMEOUT)
                first_returned.set()
                return b"ignored: the job was cancelled"
            second_saw_first_returned.append(first_returned.is_set())
            anyio.from_thread.run_sync(stop.set)
            return b"second"

        lingering = _LogSeen("waiting for its handler's thread to return")
        counting = _CountClaimsWhile(
            queue, lambda: first_started.is_set() and not first_returned.is_set()
        )

        async def cancel_first() -> None:
            await anyio.to_thread.run_sync(first_started.wait, TIMEOUT)
            assert await queue.cancel(first) is False
            # The job ends cancelled while its thread is still blocked, and the worker
            # waits for that thread before it claims anything else ...
            assert await anyio.to_thread.run_sync(lingering.seen.wait, TIMEOUT)
            assert queue.stats().claimed == 0
            assert await status_or_archived(queue, first) in ("cancelled", "archived")
            assert not first_returned.is_set()
            unblock_first.set()

        logging.getLogger("osqueue.runner").addHandler(lingering)
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(cancel_first)
                wrapped = cast(JobQueue[bytes], counting)
                summary = await run(wrapped, handler, concurrency=1, stop=stop)
        finally:
            logging.getLogger("osqueue.runner").removeHandler(lingering)
        assert summary == RunSummary(cancelled=1, completed=1)
        # ... so its one slot was never claimed for while the thread ran.
        assert counting.claims == 0
        assert second_saw_first_returned == [True]
        records = await archived(queue)
        assert records[first]["status"] == "cancelled"
        assert "result" not in records[first]
        assert base64.b64decode(records[second]["result"]) == b"second"


# -- stopping --------------------------------------------------------------------------


class _StopWhenClaimed:
    """A queue whose claims set ``stop`` as they return jobs: the runner holds jobs it
    has not started when it learns of the stop."""

    def __init__(self, queue: EmbeddedQueue[bytes], stop: anyio.Event) -> None:
        self._queue = queue
        self._stop = stop

    def __getattr__(self, name: str) -> Any:
        return getattr(self._queue, name)

    async def claim_many(self, count: int, **options: Any) -> list[ClaimedJob[bytes]]:
        jobs = await self._queue.claim_many(count, **options)
        if jobs:
            self._stop.set()
        return jobs


async def test_jobs_claimed_but_not_started_at_the_stop_are_released(url: str) -> None:
    async with open_queue(url) as queue:
        job_ids = await queue.push_many([b"a", b"b", b"c"])
        stop = anyio.Event()
        calls: list[str] = []

        async def handler(job: ClaimedJob[bytes]) -> None:
            calls.append(job.id)

        wrapped = cast(JobQueue[bytes], _StopWhenClaimed(queue, stop))
        summary = await run(wrapped, handler, concurrency=3, stop=stop)
        assert summary == RunSummary(released=3)
        assert calls == []
        await assert_back_to_ready(queue, job_ids)


async def test_a_stop_cancels_the_claim_waiting_for_a_job(url: str) -> None:
    async with open_queue(url) as queue:
        stop = anyio.Event()

        async def handler(job: ClaimedJob[bytes]) -> None:
            raise AssertionError("no job was pushed while the worker ran")

        async def stop_once_waiting() -> None:
            await queue.runtime.wait_until(lambda s: s.waiting_claims == 1)
            stop.set()

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(stop_once_waiting)
            # The claim would wait an hour: the stop does not wait for it.
            with anyio.fail_after(TIMEOUT):
                summary = await run_worker(queue, handler, poll=MAX_CLAIM_WAIT, stop=stop)
        assert summary == RunSummary()
        assert queue.stats().waiting_claims == 0
        job_id = await queue.push(b"x")
        assert (await queue.get(job_id)).status == "ready", "nobody is waiting to claim it"


async def test_a_stop_lets_running_handlers_finish_and_claims_nothing_more(url: str) -> None:
    async with open_queue(url) as queue:
        finishing, stuck, waiting = await queue.push_many([b"finishing", b"stuck", b"waiting"])
        stop, stop_now = anyio.Event(), anyio.Event()
        both_started = anyio.Event()
        finish = anyio.Event()
        started: list[str] = []
        stuck_was_cancelled = anyio.Event()

        async def handler(job: ClaimedJob[bytes]) -> bytes:
            started.append(job.id)
            if len(started) == 2:
                both_started.set()
            if job.item == b"finishing":
                await finish.wait()
                return b"finished"
            try:
                await anyio.sleep_forever()
            finally:
                stuck_was_cancelled.set()
            return b"never"

        async def drive() -> None:
            await both_started.wait()
            stop.set()
            finish.set()  # within the grace period (30 s): it completes
            await queue.runtime.wait_until(lambda s: s.claimed == 1)
            # A slot is free, but a stopping worker claims nothing more; end the grace
            # period now instead of waiting it out.
            stop_now.set()

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(drive)
            summary = await run(
                queue, handler, concurrency=2, grace=30, stop=stop, stop_now=stop_now
            )
        assert summary == RunSummary(completed=1, released=1, interrupted=1)
        assert sorted(started) == sorted([finishing, stuck])
        assert stuck_was_cancelled.is_set()
        await assert_back_to_ready(queue, [stuck, waiting])
        assert (await archived(queue))[finishing]["status"] == "completed"


async def test_grace_expiry_interrupts_an_async_handler_and_releases_its_job(url: str) -> None:
    async with open_queue(url) as queue:
        job_id = await queue.push(b"x")
        stop = anyio.Event()
        cancelled = anyio.Event()

        async def handler(job: ClaimedJob[bytes]) -> None:
            stop.set()
            try:
                await anyio.sleep_forever()
            finally:
                cancelled.set()

        summary = await run(queue, handler, grace=0.1, stop=stop)
        assert summary == RunSummary(released=1, interrupted=1)
        assert cancelled.is_set()
        await assert_back_to_ready(queue, [job_id])


async def test_grace_expiry_releases_a_plain_handlers_job_and_ignores_its_thread(
    url: str,
) -> None:
    async with open_queue(url) as queue:
        job_id = await queue.push(b"x")
        stop = anyio.Event()
        unblock = threading.Event()
        returned = threading.Event()

        def handler(job: ClaimedJob[bytes]) -> bytes:
            anyio.from_thread.run_sync(stop.set)
            unblock.wait(TIMEOUT)
            returned.set()
            return b"too late"

        summary = await run(queue, handler, grace=0.1, stop=stop)
        assert summary == RunSummary(released=1, interrupted=1, threads_left_running=1)
        assert not returned.is_set()
        await assert_back_to_ready(queue, [job_id])
        # The thread returns later: its result goes nowhere.
        unblock.set()
        assert await anyio.to_thread.run_sync(returned.wait, TIMEOUT)
        await assert_back_to_ready(queue, [job_id])
        assert await archived(queue) == {}


async def test_cancelling_run_worker_releases_the_jobs_it_holds(url: str) -> None:
    async with open_queue(url) as queue:
        job_id = await queue.push(b"x")
        started = anyio.Event()

        async def handler(job: ClaimedJob[bytes]) -> None:
            started.set()
            await anyio.sleep_forever()

        with anyio.fail_after(TIMEOUT):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(run_worker, queue, handler)
                await started.wait()
                tasks.cancel_scope.cancel()
        await assert_back_to_ready(queue, [job_id])


# -- claim errors and arguments --------------------------------------------------------


class _ClaimFails:
    """A queue whose first ``failures`` claims raise ``error``."""

    def __init__(self, queue: EmbeddedQueue[bytes], error: Exception, failures: int) -> None:
        self._queue = queue
        self._error = error
        self.failures = failures

    def __getattr__(self, name: str) -> Any:
        return getattr(self._queue, name)

    async def claim_many(self, count: int, **options: Any) -> list[ClaimedJob[bytes]]:
        if self.failures:
            self.failures -= 1
            raise self._error
        return await self._queue.claim_many(count, **options)


async def test_a_claim_that_fails_for_a_passing_reason_is_tried_again(url: str) -> None:
    async with open_queue(url) as queue:
        await queue.push(b"x")
        stop = anyio.Event()
        flaky = _ClaimFails(queue, StorageUnavailable("storage hiccup"), failures=2)

        async def handler(job: ClaimedJob[bytes]) -> None:
            stop.set()

        summary = await run(cast(JobQueue[bytes], flaky), handler, stop=stop)
        assert summary == RunSummary(completed=1)
        assert flaky.failures == 0


async def test_a_claim_error_that_will_not_pass_stops_the_worker_and_is_raised(url: str) -> None:
    async with open_queue(url) as queue:
        job_id = await queue.push(b"x")
        broken = _ClaimFails(queue, InvalidArgument("no such thing"), failures=1)
        with pytest.raises(InvalidArgument, match="no such thing"):
            await run(cast(JobQueue[bytes], broken), _returns_an_int(anyio.Event()))
        assert (await queue.get(job_id)).status == "ready"


async def _noop(job: ClaimedJob[bytes]) -> None:
    pass


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"concurrency": 0}, "concurrency must be between 1 and 1000"),
        ({"concurrency": 1001}, "concurrency must be between 1 and 1000"),
        ({"concurrency": 2.0}, "concurrency must be a whole number"),
        ({"queues": "default"}, "queues must be a list of queue names"),
        ({"queues": []}, "a claim names 1 to 64 queues"),
        ({"queues": ["bad name"]}, "queue name"),
        ({"grace": -1}, "grace must be between 0 and 86400 seconds"),
        ({"grace": float("nan")}, "grace must be between 0 and 86400 seconds"),
        ({"poll": 0}, "poll must be more than 0 and at most 3600 seconds"),
        ({"poll": float("inf")}, "poll must be more than 0 and at most 3600 seconds"),
    ],
)
async def test_bad_arguments_are_refused_before_anything_is_claimed(
    options: dict[str, Any], message: str
) -> None:
    async with open_queue("memory://") as queue:
        await queue.push(b"x")
        with pytest.raises(InvalidArgument, match=message):
            await run_worker(queue, _noop, **options)
        assert queue.stats().claimed == 0


async def test_a_handler_that_is_not_callable_is_refused() -> None:
    async with open_queue("memory://") as queue:
        with pytest.raises(TypeError, match="the handler must be callable, got int"):
            await run_worker(queue, cast(Any, 42))
