"""Each move of osqueue_core.transitions changes exactly the fields it names.

The moves build a job's next version positionally (cheaper than ``attrs.evolve``); here
each is compared with ``attrs.evolve`` of the fields it should change, over generated
jobs, so a field given in the wrong place, or dropped, is caught.
"""

from __future__ import annotations

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st

from osqueue_core import BrokerConfig, Job, JobSpec, JobStatus
from osqueue_core.archive import archive_bucket, archive_key
from osqueue_core.batch import Batch
from osqueue_core.clock import Clock
from osqueue_core.table import JobTable
from osqueue_core.transitions import Transitions
from tests.core.test_job_json import jobs

WALL = 1_700_000_000.5


def moves_for(job: Job) -> tuple[Transitions, JobTable]:
    clock = Clock()
    clock.advance(10.0, WALL)
    table = JobTable(clock)
    table.add(job)
    return Transitions(BrokerConfig(), clock, table), table


def test_job_has_the_fields_the_positional_constructions_give() -> None:
    # A new field must be added to every positional Job(...) or JobSpec(...) in
    # transitions.py, job_json.py and rules.py (and to the strategies of
    # test_job_json.py) before this is updated.
    spec_fields = "payload created_at queue priority run_at key max_attempts"
    assert [field.name for field in attrs.fields(JobSpec)] == spec_fields.split()
    job_fields = (
        "id seq born status attempts claimed_by claimed_at finished_at archive_key "
        "last_error retry_at cancel_requested result"
    )
    assert [field.name for field in attrs.fields(Job)] == job_fields.split()


@settings(max_examples=200, deadline=None)
@given(job=jobs.filter(lambda job: job.seq >= 0), attempts=st.integers(0, 9))
def test_each_move_changes_only_what_it_names(job: Job, attempts: int) -> None:
    moves, table = moves_for(job)
    moves.claim(job, "w9", 99.0, Batch())
    expected = attrs.evolve(
        job,
        status=JobStatus.CLAIMED,
        attempts=job.attempts + 1,
        claimed_by="w9",
        claimed_at=WALL,
        retry_at=None,
    )
    assert table.get(job.id) == expected

    moves, table = moves_for(job)
    moves.requeue(job, attempts, Batch(), last_error="boom", retry_at=WALL + 5)
    expected = attrs.evolve(
        job,
        status=JobStatus.READY,
        attempts=attempts,
        claimed_by=None,
        claimed_at=None,
        last_error="boom",
        retry_at=WALL + 5,
    )
    assert table.get(job.id) == expected
    moves, table = moves_for(job)
    moves.requeue(job, attempts, Batch())
    expected = attrs.evolve(
        job, status=JobStatus.READY, attempts=attempts, claimed_by=None, claimed_at=None
    )
    assert table.get(job.id) == attrs.evolve(expected, retry_at=None)

    moves, table = moves_for(job)
    moves.redrive(job, Batch())
    expected = attrs.evolve(
        job,
        status=JobStatus.READY,
        attempts=0,
        claimed_by=None,
        claimed_at=None,
        finished_at=None,
        retry_at=None,
    )
    assert table.get(job.id) == expected

    moves, table = moves_for(job)
    moves.die(job, "gave up", Batch(), 3, 4)
    expected = attrs.evolve(job, status=JobStatus.DEAD, finished_at=WALL, last_error="gave up")
    assert table.get(job.id) == expected

    moves, table = moves_for(job)
    moves.finish(job, JobStatus.COMPLETED, "e", Batch(), 3, 4, result=b"r", at=5.0)
    finished = table.get(job.id)
    assert finished is not None
    config = BrokerConfig()
    bucket = archive_bucket(WALL, config.archive_bucket_format)
    assert finished.archive_key == archive_key(config.archive_prefix, bucket, 3, 4)
    expected = attrs.evolve(
        job,
        status=JobStatus.COMPLETED,
        finished_at=5.0,
        archive_key=finished.archive_key,
        last_error="e",
        result=b"r",
        cancel_requested=False,
    )
    assert finished == expected


def test_the_archive_key_is_shared_within_a_commit_and_new_for_the_next() -> None:
    """Jobs one commit finishes share an archive key (built once); the next revision's
    jobs get their own."""
    first, second, third = (Job(f"{n:012d}-3", n, JobSpec(b"x", created_at=1.0)) for n in range(3))
    moves, table = moves_for(first)
    table.add(second)
    table.add(third)
    config = BrokerConfig()
    bucket = archive_bucket(WALL, config.archive_bucket_format)
    keys = []
    for job, revision in ((first, 4), (second, 4), (third, 5)):
        moves.finish(job, JobStatus.COMPLETED, None, Batch(), 3, revision)
        finished = table.get(job.id)
        assert finished is not None
        keys.append(finished.archive_key)
    assert keys == [archive_key(config.archive_prefix, bucket, 3, r) for r in (4, 4, 5)]
