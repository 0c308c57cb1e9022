"""Publishers and consumers in separate processes around one broker process."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import anyio
import pytest

from osqueue_core import JobStatus
from osqueue_io.storage import open_store
from osqueue_io.sync import Worker
from tests.io.archive import archived_ids

from .conftest import BrokerProcess, ChildProcess, Storage


async def archived_ids_in(storage: Storage) -> list[str]:
    store = open_store(storage.data, **storage.options)
    try:
        return await archived_ids(store)
    finally:
        await store.aclose()


@pytest.mark.parametrize("storage_kind", ["local", "s3"])
def test_every_job_is_completed_exactly_once(
    storage_kind: str,
    request: pytest.FixtureRequest,
    start_broker: Callable[..., BrokerProcess],
    run_worker: Callable[..., ChildProcess],
) -> None:
    storage: Storage = request.getfixturevalue(f"{storage_kind}_storage")
    broker = start_broker(storage.data, env=storage.env)

    publishers = [run_worker("publish", broker.address, "15", f"p{i}") for i in range(2)]
    pushed: dict[str, str] = {}
    for publisher in publishers:
        assert publisher.wait(30) == 0, publisher.text
        pushed.update((m[1], m[2]) for m in publisher.lines_matching(r"^pushed (\S+) (\S+)$"))
    assert len(pushed) == 30

    consumers = [run_worker("consume", broker.address) for _ in range(3)]
    completed: list[tuple[str, str, int]] = []
    for consumer in consumers:
        assert consumer.wait(30) == 0, consumer.text
        completed += [
            (m[1], m[2], int(m[3]))
            for m in consumer.lines_matching(r"^completed (\S+) (\S+) (\d+)$")
        ]
    # Every job completed by exactly one consumer, on its first attempt, intact.
    assert Counter(job_id for job_id, _, _ in completed) == Counter(pushed.keys())
    assert all(pushed[job_id] == data and attempts == 1 for job_id, data, attempts in completed)

    assert broker.terminate() == 0, broker.text
    state = storage.read_state()
    assert state.header.owner.released
    assert all(job.status is JobStatus.COMPLETED for job in state.jobs)
    # Durably finished: archived once each, or still in the state awaiting archive.
    archived = anyio.run(archived_ids_in, storage)
    assert len(archived) == len(set(archived))
    assert set(archived) | {job.id for job in state.jobs} == set(pushed)


def test_job_of_a_killed_worker_goes_back_to_the_queue(
    local_storage: Storage,
    start_broker: Callable[..., BrokerProcess],
    run_worker: Callable[..., ChildProcess],
) -> None:
    broker = start_broker(local_storage.data, "--heartbeat-timeout", "2s")
    with Worker(broker.address) as worker:
        job_id = worker.push(b"precious")
        holder = run_worker("hold", broker.address)
        held = holder.wait_for_line(r"^holding (\S+) (\d+)$", 20)
        assert (held[1], held[2]) == (job_id, "1")
        # Heartbeats keep the job with the holder for longer than the lease timeout.
        assert worker.claim(wait=2.5) is None

        holder.process.kill()  # SIGKILL: no goodbye, no more heartbeats
        holder.process.wait()
        job = worker.claim(wait=10)
        assert job is not None
        assert (job.id, job.data, job.attempts) == (job_id, b"precious", 2)
        worker.complete(job.id)
        assert worker.stats().ready == 0
    assert broker.terminate() == 0, broker.text
