"""A broker process's life: graceful stop, restart, and replacement by another broker."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio
import pytest
from grpclib import GRPCError
from grpclib.client import Channel, Stream
from grpclib.const import Cardinality, Status

from osqueue_core import BrokerNotRunning, BrokerReplaced, BrokerStopping, OsqueueError
from osqueue_io._proto.osqueue.v1 import (
    ClaimRequest,
    ClaimResponse,
    QueueServiceStub,
    StatsRequest,
    StatsResponse,
)
from osqueue_io.status import ERROR_KEY, NEW_IDENTITY_KEY
from osqueue_io.worker import Worker

from .conftest import BrokerProcess, Storage

pytestmark = pytest.mark.anyio

StartBroker = Callable[..., BrokerProcess]


@asynccontextmanager
async def held_call(port: int) -> AsyncIterator[Callable[[], Awaitable[StatsResponse]]]:
    """A Stats call the broker has admitted but cannot finish: its request body is
    sent only when the test calls the yielded function. Meanwhile a stopping broker
    keeps draining, so the test can look at it.

    Admitted for sure: a second call on the same connection completes a round trip
    first, and the broker handles a connection's calls in the order they arrive.
    """
    async with Channel("127.0.0.1", port) as channel:
        stream = channel.request(
            "/osqueue.v1.QueueService/Stats",
            Cardinality.UNARY_UNARY,
            StatsRequest,
            StatsResponse,
            timeout=60,
        )
        async with stream:
            await stream.send_request()
            await QueueServiceStub(channel).stats(timeout=10)

            async def finish() -> StatsResponse:
                await stream.send_message(StatsRequest(), end=True)
                reply = await stream.recv_message()
                assert reply is not None
                return reply

            yield finish


async def unary(stream: Stream[StatsRequest, StatsResponse], request: StatsRequest) -> object:
    async with stream:
        await stream.send_message(request, end=True)
        return await stream.recv_message()


async def test_sigterm_answers_calls_in_flight_refuses_new_ones_and_releases(
    local_storage: Storage, start_broker: StartBroker
) -> None:
    broker = start_broker(local_storage.data)
    acknowledged: list[str] = []
    endings: list[OsqueueError] = []
    enough = anyio.Event()

    async def keep_pushing(worker: Worker, name: str) -> None:
        """Push without pause until the broker refuses: pushes are in flight when the
        signal arrives."""
        for i in range(10_000):
            try:
                acknowledged.append(await worker.push(f"{name}-{i}".encode()))
            except OsqueueError as error:
                endings.append(error)
                return
            if len(acknowledged) >= 30:
                enough.set()

    async with (
        Worker(broker.address, timeout=20) as publisher,
        held_call(broker.port) as finish_held_call,
    ):
        async with anyio.create_task_group() as tasks:
            for n in range(6):
                tasks.start_soon(keep_pushing, publisher, f"p{n}")
            await enough.wait()
            broker.send_signal(signal.SIGTERM)
            # The held call keeps the broker draining, so it is alive to refuse calls
            # until every pusher has been told to stop.
        assert len(endings) == 6
        assert all(isinstance(error, BrokerStopping) for error in endings), endings
        assert all(error.retryable for error in endings)
        # The call admitted before the signal is answered too.
        assert isinstance(await finish_held_call(), StatsResponse)

    assert await anyio.to_thread.run_sync(broker.wait, 15) == 0, broker.text
    in_flight = broker.lines_matching(r"stopping: (\d+) calls in flight")
    assert in_flight
    assert int(in_flight[0][1]) >= 1
    state = await local_storage.aread_state()
    assert state.header.owner.released
    # Every acknowledged push is stored, and nothing that was refused.
    assert sorted(job.id for job in state.jobs) == sorted(acknowledged)


async def test_sigterm_answers_a_waiting_claim_empty_at_once(
    local_storage: Storage, start_broker: StartBroker
) -> None:
    broker = start_broker(local_storage.data)
    async with Channel("127.0.0.1", broker.port) as channel:
        stub = QueueServiceStub(channel)
        claim = channel.request(
            "/osqueue.v1.QueueService/Claim",
            Cardinality.UNARY_UNARY,
            ClaimRequest,
            ClaimResponse,
            timeout=60,
        )
        async with claim:
            await claim.send_message(ClaimRequest(worker_id="w", wait_ms=30_000), end=True)
            # Same connection, later call: once it is answered the claim is waiting.
            assert (await stub.stats(timeout=5)).ready == 0
            broker.send_signal(signal.SIGTERM)
            # Answered by the drain, not by waiting out its 30 s (a hang guard).
            with anyio.fail_after(10):
                reply = await claim.recv_message()
        assert reply is not None
        assert reply.empty
    assert await anyio.to_thread.run_sync(broker.wait, 15) == 0, broker.text


async def test_a_second_signal_stops_at_once(
    local_storage: Storage, start_broker: StartBroker
) -> None:
    broker = start_broker(local_storage.data, "--drain-timeout", "60s")
    async with held_call(broker.port), Worker(broker.address) as worker:
        broker.send_signal(signal.SIGTERM)
        with anyio.fail_after(10):
            while True:  # polling until the broker is draining
                try:
                    await worker.stats()
                except BrokerStopping:
                    break
                await anyio.sleep(0.01)
        # The held call would keep it draining for a minute; a second signal ends it.
        broker.send_signal(signal.SIGINT)
        assert await anyio.to_thread.run_sync(broker.wait, 10) == 1, broker.text
    assert "SIGINT again: stopping now" in broker.text


async def test_the_same_worker_carries_on_after_a_broker_restart(
    local_storage: Storage, start_broker: StartBroker
) -> None:
    broker = start_broker(local_storage.data)
    async with Worker(broker.address, timeout=5) as worker:
        first = await worker.push(b"before")
        job = await worker.claim()
        assert job is not None
        assert job.id == first
        assert await anyio.to_thread.run_sync(broker.terminate) == 0, broker.text

        with pytest.raises(BrokerNotRunning) as down:
            await worker.push(b"while down")
        assert down.value.retryable

        restarted = start_broker(local_storage.data, port=broker.port)
        # Same Worker, same channel: it reconnects; the job it held survived.
        assert await worker.heartbeat(job.id) == pytest.approx(30)
        await worker.complete(job.id)
        second = await worker.push(b"after")
        again = await worker.claim()
        assert again is not None
        assert (again.id, again.data) == (second, b"after")
        stats = await worker.stats()
        assert (stats.epoch, stats.address) == (2, restarted.address)
    assert await anyio.to_thread.run_sync(restarted.terminate) == 0, restarted.text


async def test_a_replaced_broker_refuses_calls_naming_the_new_owner_and_exits(
    local_storage: Storage, start_broker: StartBroker
) -> None:
    # No ownership probe: the client's heartbeat is what discovers the takeover.
    first = start_broker(local_storage.data, "--identity", "broker-a", "--heartbeat-check", "1h")
    async with Worker(first.address, timeout=5) as worker, held_call(first.port) as finish:
        job_id = await worker.push(b"survives")
        job = await worker.claim()
        assert job is not None

        second = start_broker(local_storage.data, "--identity", "broker-b")
        with pytest.raises(BrokerReplaced) as replaced:
            await worker.heartbeat(job_id)
        error = replaced.value
        assert error.retryable
        assert (error.new_identity, error.new_epoch, error.new_address) == (
            "broker-b",
            2,
            second.address,
        )

        # Until it exits, the old broker refuses every call at once, saying who to
        # ask instead: in the status message and in the trailing metadata.
        async with Channel("127.0.0.1", first.port) as channel:
            stream = channel.request(
                "/osqueue.v1.QueueService/Stats",
                Cardinality.UNARY_UNARY,
                StatsRequest,
                StatsResponse,
                timeout=5,
            )
            with pytest.raises(GRPCError) as refused:
                await unary(stream, StatsRequest())
            assert refused.value.status is Status.UNAVAILABLE
            assert "'broker-b'" in (refused.value.message or "")
            assert stream.trailing_metadata is not None
            assert stream.trailing_metadata[ERROR_KEY] == "BrokerReplaced"
            assert stream.trailing_metadata[NEW_IDENTITY_KEY] == b"broker-b"
        await finish()

    assert await anyio.to_thread.run_sync(first.wait, 10) == 1, first.text
    assert "replaced by 'broker-b'" in first.text

    # The worker goes to the new owner and finishes its job there.
    async with Worker(error.new_address or "", worker_id=worker.worker_id) as moved:
        await moved.heartbeat(job_id)
        await moved.complete(job_id)
        assert (await moved.stats()).identity == "broker-b"
    assert await anyio.to_thread.run_sync(second.terminate) == 0, second.text


def test_an_idle_replaced_broker_notices_by_itself_and_exits(
    local_storage: Storage, start_broker: StartBroker
) -> None:
    first = start_broker(local_storage.data, "--identity", "broker-a", "--heartbeat-check", "100ms")
    second = start_broker(local_storage.data, "--identity", "broker-b")
    assert first.wait(10) == 1, first.text
    assert "replaced by 'broker-b' (epoch 2)" in first.text
    assert second.terminate() == 0, second.text
