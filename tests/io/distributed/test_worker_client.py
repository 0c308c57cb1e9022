"""The async Worker against a broker process: the API beyond the four original RPCs."""

from __future__ import annotations

import re
import socket
from collections.abc import Callable

import anyio
import pytest
from grpclib.client import Channel

from osqueue_core import (
    MAX_CLAIM_WAIT,
    MAX_ERROR_LENGTH,
    MAX_ID_LENGTH,
    BrokerNotRunning,
    InvalidArgument,
    JobCancelled,
    LeaseLost,
    NewJob,
    OsqueueError,
    clip_error_text,
)
from osqueue_io._proto.osqueue.v1 import ClaimRequest, QueueServiceStub
from osqueue_io.sync import Worker as BlockingWorker
from osqueue_io.worker import Worker, default_worker_id

from .conftest import BrokerProcess, Storage

pytestmark = pytest.mark.anyio

StartBroker = Callable[..., BrokerProcess]


def closed_port() -> int:
    """A port nothing listens on: a request sent there fails with BrokerNotRunning."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def broker(local_storage: Storage, start_broker: StartBroker) -> BrokerProcess:
    # A failed job is retried at once: these tests are about the client, not backoff.
    return start_broker(local_storage.data, "--heartbeat-timeout", "2s", "--retry-base", "0")


async def test_batches_failures_and_stats(broker: BrokerProcess) -> None:
    async with Worker(broker.address) as worker:
        ids = await worker.push_batch([b"a", b"b", b"c"])
        assert len(set(ids)) == 3
        assert await worker.push_batch([]) == []

        job = await worker.claim()
        assert job is not None
        assert (job.id, job.data, job.attempts, job.lease_timeout) == (ids[0], b"a", 1, 2.0)
        assert await worker.fail(job.id, "flaky", requeue=True) is False
        stats = await worker.stats()
        assert (stats.ready, stats.claimed, stats.epoch) == (3, 0, 1)
        assert stats.address == broker.address

        # Push order: a requeued job keeps its place at the front.
        claimed = [await worker.claim() for _ in range(3)]
        assert [(j.id, j.attempts) for j in claimed if j] == [(ids[0], 2), (ids[1], 1), (ids[2], 1)]
        assert await worker.fail(ids[0], "hopeless", requeue=False) is True
        for job_id in ids[1:]:
            await worker.complete(job_id)
        assert await worker.claim() is None
        stats = await worker.stats()
        assert (stats.ready, stats.claimed) == (0, 0)


async def test_processing_completes_on_success_and_requeues_on_error(
    broker: BrokerProcess,
) -> None:
    async with Worker(broker.address, heartbeat_interval=0.2) as worker:
        await worker.push(b"twice")
        job = await worker.claim()
        assert job is not None
        with pytest.raises(ValueError, match="boom"):
            async with worker.processing(job):
                raise ValueError("boom")
        again = await worker.claim()
        assert again is not None
        assert (again.id, again.attempts) == (job.id, 2)
        # Work for longer than the 2 s lease: the background heartbeats keep it (or
        # completing at the end would raise LeaseLost).
        async with worker.processing(again) as lease:
            await anyio.sleep(2.5)
        assert lease.heartbeats >= 5
        stats = await worker.stats()
        assert (stats.ready, stats.claimed) == (0, 0)


async def test_keep_alive_reports_a_lost_lease(broker: BrokerProcess) -> None:
    async with Worker(broker.address, heartbeat_interval=0.05) as worker:
        await worker.push(b"job")
        job = await worker.claim()
        assert job is not None

        async def work_on_it() -> None:
            async with worker.keep_alive(job):
                # Another part of the program gives the job up; the next heartbeat
                # learns the job is no longer ours and the block is cancelled.
                await worker.fail(job.id, requeue=True)
                await anyio.sleep_forever()

        with pytest.raises(LeaseLost):
            await work_on_it()


async def test_a_waiting_claim_gets_a_job_pushed_meanwhile(broker: BrokerProcess) -> None:
    async with Worker(broker.address) as consumer, Worker(broker.address) as publisher:
        got: list[object] = []

        async def claim() -> None:
            got.append(await consumer.claim(wait=10))

        with anyio.fail_after(20):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(claim)
                # Push only once the broker reports the claim waiting (each Stats is a
                # round trip to the broker: no sleeping involved).
                while (await publisher.stats()).waiting_claims != 1:
                    pass
                job_id = await publisher.push(b"hot")
        assert [getattr(job, "id", None) for job in got] == [job_id]
        assert (await publisher.stats()).waiting_claims == 0


async def test_a_waiting_claim_ends_before_the_client_deadline(broker: BrokerProcess) -> None:
    async with Channel("127.0.0.1", broker.port) as channel:
        reply = await QueueServiceStub(channel).claim(
            ClaimRequest(worker_id="w", wait_ms=60_000), timeout=1.0
        )
        # An answer: past its deadline the client would have raised TimeoutError.
        assert reply.empty


async def test_an_unreachable_broker_is_a_retryable_error() -> None:
    # Nothing listens on the port: refused at once.
    async with Worker(f"127.0.0.1:{closed_port()}", timeout=2) as worker:
        with pytest.raises(BrokerNotRunning) as refused:
            await worker.push(b"x")
        assert refused.value.retryable
    # A listener that never answers: the deadline.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        async with Worker(f"127.0.0.1:{silent.getsockname()[1]}", timeout=0.3) as worker:
            with anyio.fail_after(10), pytest.raises(BrokerNotRunning, match="no reply in time"):
                await worker.stats()


def test_worker_arguments_are_checked() -> None:
    assert re.fullmatch(r".+:\d+:[0-9a-f]{6}", default_worker_id())
    assert len(default_worker_id()) <= MAX_ID_LENGTH
    assert Worker("[::1]:9090").host == "::1"
    with pytest.raises(InvalidArgument):
        Worker("localhost")
    with pytest.raises(InvalidArgument):
        Worker(timeout=0)
    long_id = "w" * (MAX_ID_LENGTH + 1)
    for worker_type in (Worker, BlockingWorker):
        with pytest.raises(InvalidArgument) as too_long:
            worker_type(worker_id=long_id)
        assert f"the limit is {MAX_ID_LENGTH}" in str(too_long.value)
        assert long_id not in str(too_long.value)
        with pytest.raises(InvalidArgument):
            worker_type(worker_id="")


BAD_REQUESTS: list[tuple[str, dict[str, object]]] = [
    ("claim", {"wait": MAX_CLAIM_WAIT + 1}),
    ("claim", {"wait": -1}),
    ("claim", {"wait": float("nan")}),
    ("heartbeat", {"job_id": "j" * (MAX_ID_LENGTH + 1)}),
    ("complete", {"job_id": ""}),
    ("fail", {"job_id": "j" * (MAX_ID_LENGTH + 1)}),
]


@pytest.mark.parametrize(("method", "arguments"), BAD_REQUESTS)
async def test_requests_over_the_limits_are_refused_before_sending(
    method: str, arguments: dict[str, object]
) -> None:
    # Sent, any request would fail with BrokerNotRunning: nothing listens there.
    async with Worker(f"127.0.0.1:{closed_port()}") as worker:
        with pytest.raises(InvalidArgument):
            await getattr(worker, method)(**arguments)


@pytest.mark.parametrize(("method", "arguments"), BAD_REQUESTS)
def test_the_blocking_worker_refuses_them_too(method: str, arguments: dict[str, object]) -> None:
    with BlockingWorker(f"127.0.0.1:{closed_port()}") as worker, pytest.raises(InvalidArgument):
        getattr(worker, method)(**arguments)


@pytest.mark.parametrize("blocking", [False, True], ids=["async", "blocking"])
async def test_a_long_error_text_is_cut_before_sending(
    broker: BrokerProcess, local_storage: Storage, blocking: bool
) -> None:
    text = "start " + "." * (3 * MAX_ERROR_LENGTH) + " the end"
    if blocking:
        with BlockingWorker(broker.address) as worker:
            worker.push(b"job")
            job = worker.claim()
            assert job is not None
            assert worker.fail(job.id, text) is False
    else:
        async with Worker(broker.address) as async_worker:
            await async_worker.push(b"job")
            async_job = await async_worker.claim()
            assert async_job is not None
            assert await async_worker.fail(async_job.id, text) is False
    [job_state] = (await local_storage.aread_state()).jobs
    assert job_state.last_error == clip_error_text(text)
    assert len(clip_error_text(text)) <= MAX_ERROR_LENGTH
    assert job_state.last_error.startswith("start ")
    assert job_state.last_error.endswith(" the end")


async def test_a_broker_dying_with_connections_queued_gives_only_typed_errors() -> None:
    """A listener that keeps closing with connections still queued (a broker killed
    under load): grpclib may hand the client a connection that is already closed, and
    its AttributeError escaped the worker before (the crash soak saw it about once per
    100 kills). Every failure must be a typed, retryable error."""
    import threading
    import time

    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    stop = threading.Event()

    def flap() -> None:
        while not stop.is_set():
            with socket.socket() as listener:
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                listener.bind(("127.0.0.1", port))
                listener.listen(16)
                time.sleep(0.002)  # a broker's life, in this test: not synchronisation
            # closed: connections queued but never accepted are reset

    thread = threading.Thread(target=flap, daemon=True)
    thread.start()
    errors: list[OsqueueError] = []
    try:
        async with Worker(f"127.0.0.1:{port}", timeout=1) as worker:
            for _ in range(2000):
                try:
                    await worker.push(b"x")
                except OsqueueError as error:  # anything else fails the test
                    errors.append(error)
    finally:
        stop.set()
        thread.join()
    assert {type(error).__name__ for error in errors} == {"BrokerNotRunning"}
    assert all(error.retryable for error in errors)


async def test_the_lifecycle_calls_by_job_id(broker: BrokerProcess) -> None:
    async with Worker(broker.address, worker_id="w", heartbeat_interval=0.05) as worker:
        urgent = await worker.push(b"urgent", queue="q", priority=9, key="u", max_attempts=1)
        assert await worker.push(b"again", queue="q", key="u") == urgent
        ids = await worker.push_batch([b"plain", NewJob(b"later", queue="q", delay=60)])
        assert (await worker.get(ids[1])).run_at is not None
        job = await worker.claim(queues=["q", "default"])
        assert job is not None
        assert (job.id, job.queue, job.priority, job.max_attempts) == (urgent, "q", 9, 1)
        await worker.release(job.id)
        [again, plain] = await worker.claim_many(5, queues=["q", "default"])
        assert (again.id, again.attempts, plain.id) == (urgent, 1, ids[0])
        assert await worker.fail(again.id, "no", requeue=True) is True  # max_attempts=1
        page = await worker.dead_letters(limit=1)
        assert ([j.id for j in page.jobs], page.more) == ([urgent], False)
        assert await worker.redrive([urgent]) == [urgent]
        assert await worker.cancel(ids[1]) is True  # delayed: at once

        assert await worker.cancel(plain.id) is False  # claimed: its worker learns it
        with pytest.raises(JobCancelled):
            await worker.heartbeat(plain.id)
        redriven = await worker.claim(queues=["q"])
        assert redriven is not None
        await worker.cancel(redriven.id)
        with anyio.fail_after(10), pytest.raises(JobCancelled):
            async with worker.processing(redriven):
                await anyio.sleep_forever()
        assert (await worker.get(plain.id)).cancel_requested
        assert await worker.fail(plain.id) is True  # ends cancelled, never retried
        assert await worker.claim(queues=["q", "default"]) is None
        assert await worker.purge(queue="q") == []


def test_the_blocking_worker_has_the_lifecycle_calls(broker: BrokerProcess) -> None:
    with BlockingWorker(broker.address) as worker:
        job_id = worker.push(b"x", queue="q", priority=2)
        [job] = worker.claim_many(3, queues=["q"])
        assert (job.id, job.priority) == (job_id, 2)
        worker.release(job.id)
        job_again = worker.claim(queues=["q"])
        assert job_again is not None
        assert worker.get(job_id).holder == worker.worker_id
        worker.complete(job_id, b"result")
        assert worker.dead_letters().jobs == ()
        assert worker.cancel(worker.push(b"y")) is True
        assert worker.redrive(queue="q") == []
        assert worker.purge(queue="q") == []
