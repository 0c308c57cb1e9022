"""The blocking EmbeddedQueue: the same behaviour through a portal, from threads."""

from __future__ import annotations

import threading
import time
from collections import Counter

import attrs
import pytest

from osqueue_core import BrokerConfig, LeaseLost
from osqueue_io.sync import EmbeddedQueue

from .conftest import Storage

FAST = BrokerConfig(heartbeat_timeout=0.5, retry_initial=0.01, retry_max=0.1)


@attrs.frozen
class Task:
    name: str


def open_queue(storage: Storage, config: BrokerConfig = FAST) -> EmbeddedQueue[Task]:
    return EmbeddedQueue(storage.url, Task, config=config, storage_options=storage.options)


def test_round_trip(storage: Storage) -> None:
    with open_queue(storage) as q:
        job_id = q.push(Task("a"))
        job = q.claim("w1")
        assert job is not None
        assert (job.id, job.item) == (job_id, Task("a"))
        assert 0 < q.heartbeat(job) <= 30
        q.complete(job)
        assert q.claim("w1", wait=0.05) is None


def test_complete_many_blocks_and_answers_each_job(storage: Storage) -> None:
    with open_queue(storage) as q:
        q.push_many([Task("a"), Task("b")])
        jobs = q.claim_many(2)
        lost = attrs.evolve(jobs[1], worker_id="not-the-holder")
        outcomes = q.complete_many([jobs[0], lost], [b"done", None])
        assert outcomes[0] is None
        assert isinstance(outcomes[1], LeaseLost)
        assert q.complete_many([jobs[1]]) == [None]


def test_threads_share_one_queue_and_each_job_runs_once(storage: Storage) -> None:
    done: Counter[str] = Counter()
    lock = threading.Lock()
    with open_queue(storage, BrokerConfig(heartbeat_timeout=30)) as q:
        pushed = [q.push(Task(str(i))) for i in range(40)]

        def consume(worker: str) -> None:
            while (job := q.claim(worker, wait=0.1)) is not None:
                with q.processing(job), lock:
                    done[job.id] += 1

        threads = [threading.Thread(target=consume, args=(f"w{i}",)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not any(t.is_alive() for t in threads)
    assert sorted(done) == sorted(pushed)
    assert set(done.values()) == {1}


def test_keep_alive_keeps_a_slow_job_and_reports_loss(storage: Storage) -> None:
    with open_queue(storage) as q:
        q.push(Task("slow"))
        job = q.claim("w1")
        assert job is not None
        with q.keep_alive(job) as lease:
            time.sleep(3 * FAST.heartbeat_timeout)  # blocking work longer than a lease
            assert q.claim("w2") is None
        assert lease.heartbeats >= 3

        # Now lose it: another party requeues the job; the keeper reports it on exit.
        def work() -> None:
            with q.keep_alive(job) as lease:
                q.fail(job, "taken away")
                # A blocking block cannot be cancelled: it polls lease.lost, as the
                # keep_alive docstring tells users to.
                deadline = time.monotonic() + 10
                while not lease.lost and time.monotonic() < deadline:
                    time.sleep(0.01)
                assert lease.lost

        with pytest.raises(LeaseLost):
            work()
