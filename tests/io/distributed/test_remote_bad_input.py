"""Bad lifecycle input over gRPC: each a typed error, and the queue left as it was.

Two sources of refusal are checked: the client, for values the wire cannot carry
(a negative delay, an attempt limit of 0, an empty queue name: their wire encoding
would mean something else), and the broker, for everything else, whether sent by
``RemoteQueue`` or as raw messages no well-behaved client would send.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from typing import Any

import betterproto2
import pytest

from osqueue_core import (
    MAX_KEY_LENGTH,
    InvalidArgument,
    JobAlreadyFinished,
    JobNotDead,
    JobNotFound,
    OsqueueError,
    PayloadTooLarge,
)
from osqueue_io import RemoteQueue
from osqueue_io._proto.osqueue import v1 as pb
from osqueue_io.remote import QueueStats

from .conftest import BrokerProcess, Storage

pytestmark = pytest.mark.anyio

StartBroker = Callable[..., BrokerProcess]
KiB = 1024


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# Sent, each would fail with BrokerNotRunning: nothing listens at a closed port.
REFUSED_BEFORE_SENDING: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
    ("push", (b"x",), {"delay": -1}),
    ("push", (b"x",), {"delay": float("inf")}),
    ("push", (b"x",), {"run_at": -5.0}),
    ("push", (b"x",), {"max_attempts": 0}),
    ("push", (b"x",), {"priority": 2**31}),
    ("push", (b"x",), {"queue": ""}),
    ("push", (b"x",), {"key": ""}),
    ("push", ("not bytes",), {}),
    ("push_many", ([b"x", b"y"],), {"keys": ["only one"]}),
    ("claim", (), {"queues": []}),
    ("claim", (), {"queues": "emails"}),
    ("claim", (), {"wait": -1}),
    ("claim_many", (0,), {}),
    ("dead_letters", (), {"limit": 0}),
    ("dead_letters", (), {"queue": ""}),
    ("redrive", ("one-id",), {}),
    ("purge", (), {"queue": ""}),
    ("cancel", ("",), {}),
    ("get", ("j" * 257,), {}),
]


@pytest.mark.parametrize(("method", "args", "kwargs"), REFUSED_BEFORE_SENDING)
async def test_values_the_wire_cannot_carry_are_refused_before_sending(
    method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    async with RemoteQueue(f"127.0.0.1:{closed_port()}", bytes) as queue:
        with pytest.raises(InvalidArgument):
            await getattr(queue, method)(*args, **kwargs)


async def test_the_client_refuses_what_the_core_refuses_with_the_same_words() -> None:
    async with RemoteQueue(f"127.0.0.1:{closed_port()}", bytes) as queue:
        with pytest.raises(InvalidArgument) as negative:
            await queue.push(b"x", delay=-1)
    assert str(negative.value).startswith("delay must be between 0 and")


@pytest.fixture
def broker(local_storage: Storage, start_broker: StartBroker) -> BrokerProcess:
    return start_broker(local_storage.data, "--max-attempts", "0")


def unchanged(stats: QueueStats) -> tuple[object, ...]:
    """What must not move when a request is refused: every count, and the revision
    (a refused request writes nothing)."""
    return (
        stats.revision,
        stats.ready,
        stats.delayed,
        stats.claimed,
        stats.dead,
        stats.queues,
    )


async def test_the_broker_refuses_bad_lifecycle_input_and_changes_nothing(
    broker: BrokerProcess, local_storage: Storage
) -> None:
    async with RemoteQueue(broker.address, bytes) as queue:
        ready = await queue.push(b"ready", key="k")
        held_id = await queue.push(b"held")
        await queue.push(b"dying")
        job = await queue.claim()
        assert job is not None
        assert job.id == ready
        held = await queue.claim()
        assert held is not None
        assert held.id == held_id
        dying = await queue.claim()
        assert dying is not None
        await queue.fail(dying, "gone", retry=False)
        before = unchanged(await queue.stats())
        call = queue.connection.call

        async def refused(
            error: type[OsqueueError], attempt: Callable[[], Awaitable[object]]
        ) -> OsqueueError:
            with pytest.raises(error) as raised:
                await attempt()
            return raised.value

        # Through the client, refused by the broker.
        await refused(InvalidArgument, lambda: queue.push(b"x", queue="has space"))
        await refused(InvalidArgument, lambda: queue.push(b"x", queue="q" * 65))
        await refused(InvalidArgument, lambda: queue.push(b"x", key="k" * (MAX_KEY_LENGTH + 1)))
        await refused(InvalidArgument, lambda: queue.push(b"x", delay=1, run_at=2e9))
        await refused(InvalidArgument, lambda: queue.push(b"x", max_attempts=10_001))
        await refused(InvalidArgument, lambda: queue.push_many([b"x"], queue="bad/name"))
        await refused(InvalidArgument, lambda: queue.claim(queues=["ok", "not ok"]))
        await refused(InvalidArgument, lambda: queue.dead_letters(queue="no such!"))
        await refused(InvalidArgument, lambda: queue.redrive())  # neither ids nor a queue
        await refused(InvalidArgument, lambda: queue.purge([ready], queue="default"))  # both
        await refused(PayloadTooLarge, lambda: queue.complete(job, b"r" * (64 * KiB + 1)))
        not_dead = await refused(JobNotDead, lambda: queue.redrive([ready]))
        assert ready in str(not_dead)
        await refused(JobNotDead, lambda: queue.purge([dying.id, held_id]))
        unknown = await refused(JobNotFound, lambda: queue.redrive(["no-such-job"]))
        assert isinstance(unknown, JobNotFound)
        assert unknown.job_id == "no-such-job"  # from the broker's trailer: Redrive has ids
        after = await refused(JobNotFound, lambda: queue.dead_letters(after="not-dead"))
        assert isinstance(after, JobNotFound)
        assert after.job_id == "not-dead"
        finished = await refused(JobAlreadyFinished, lambda: queue.cancel(dying.id))
        assert isinstance(finished, JobAlreadyFinished)
        assert (finished.job_id, finished.status) == (dying.id, "dead")

        # Raw messages no client of ours sends.
        raw: list[tuple[str, betterproto2.Message, type[betterproto2.Message]]] = [
            ("Push", pb.PushRequest(data=b"x", delay_ms=2**64 - 1), pb.PushResponse),
            ("Push", pb.PushRequest(data=b"x", run_at_ms=2**64 - 1), pb.PushResponse),
            ("Push", pb.PushRequest(data=b"x", max_attempts=2**32 - 1), pb.PushResponse),
            (
                "PushBatch",
                pb.PushBatchRequest(data=[b"x"], items=[pb.PushItem(data=b"y")]),
                pb.PushBatchResponse,
            ),
            (
                "PushBatch",
                pb.PushBatchRequest(items=[pb.PushItem(data=b"y"), pb.PushItem(queue="?")]),
                pb.PushBatchResponse,
            ),
            (
                "ClaimBatch",
                pb.ClaimBatchRequest(worker_id="w", max_jobs=1001),
                pb.ClaimBatchResponse,
            ),
            ("ListDead", pb.ListDeadRequest(limit=1001), pb.ListDeadResponse),
            ("Release", pb.ReleaseRequest(job_id=held_id, worker_id=""), pb.ReleaseResponse),
            ("Cancel", pb.CancelRequest(), pb.CancelResponse),
            ("GetJob", pb.GetJobRequest(), pb.GetJobResponse),
        ]
        for rpc, request, reply_type in raw:
            with pytest.raises(InvalidArgument):
                await call(rpc, request, reply_type)

        assert unchanged(await queue.stats()) == before
        # The jobs are as they were: still held, still claimable, still dead.
        assert (await queue.get(held_id)).status == "claimed"
        assert (await queue.get(ready)).status == "claimed"
        assert [j.id for j in await queue.dead_letters()] == [dying.id]
        await queue.complete(job)
    assert broker.terminate() == 0, broker.text
    assert "Traceback" not in broker.text
    statuses = {job.id: job.status.value for job in (await local_storage.aread_state()).jobs}
    assert statuses.pop(ready, "completed") == "completed"  # archived, or on its way
    assert statuses == {held_id: "claimed", dying.id: "dead"}


async def test_a_complete_batch_is_refused_whole_or_answered_per_item(
    broker: BrokerProcess,
) -> None:
    async with RemoteQueue(broker.address, bytes, worker_id="w1") as queue:
        first, second = await queue.push_many([b"1", b"2"])
        jobs = await queue.claim_many(2)
        assert [job.id for job in jobs] == [first, second]
        before = unchanged(await queue.stats())
        call = queue.connection.call

        def item(job_id: str, worker_id: str = "w1") -> pb.CompleteRequest:
            return pb.CompleteRequest(job_id=job_id, worker_id=worker_id)

        # The whole call refused, nothing completed: no item, a job twice, too many.
        refusals: list[tuple[type[OsqueueError], pb.CompleteBatchRequest]] = [
            (InvalidArgument, pb.CompleteBatchRequest()),
            (InvalidArgument, pb.CompleteBatchRequest(items=[item(first), item(first)])),
            (
                PayloadTooLarge,
                pb.CompleteBatchRequest(items=[item(f"j{i}") for i in range(1001)]),
            ),
        ]
        for error, request in refusals:
            with pytest.raises(error):
                await call("CompleteBatch", request, pb.CompleteBatchResponse)
        with pytest.raises(InvalidArgument):  # the client's own check, before sending
            await queue.complete_many([jobs[0], jobs[0]])
        assert unchanged(await queue.stats()) == before

        # Per item: a foreign worker, an unknown job, an id over its limit, a result
        # over its limit; the one good item completes.
        reply = await call(
            "CompleteBatch",
            pb.CompleteBatchRequest(
                items=[
                    item(first, "w2"),
                    item("no-such-job"),
                    item("j" * 257),
                    pb.CompleteRequest(job_id="other", worker_id="w1", result=b"r" * 65537),
                    item(second),
                ]
            ),
            pb.CompleteBatchResponse,
        )
        assert [(i.code, i.error) for i in reply.items] == [
            (9, "LeaseLost"),  # FAILED_PRECONDITION
            (5, "JobNotFound"),  # NOT_FOUND
            (3, "InvalidArgument"),
            (8, "PayloadTooLarge"),  # RESOURCE_EXHAUSTED
            (0, ""),
        ]
        assert reply.items[1].details == {"osqueue-job-id-bin": b"no-such-job"}
        assert all(len(i.message) <= 1024 for i in reply.items)
        assert (await queue.get(first)).status == "claimed", "still held by w1"
        assert await queue.complete_many(jobs) == [None, None], "the second: a repeat"
    assert broker.terminate() == 0, broker.text
    assert "Traceback" not in broker.text
