"""The model test's checks of what storage holds: every step (nothing more, nothing less,
born as asked, one job per key, batches whole, endings final) and once everything has
settled (acknowledged endings archived, and the state's whole history allowed:
tests/core/model_history.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from osqueue_core import Job, JobStatus, PushBatch

from .model_basics import EPSILON, Spec, leaving, limit_of
from .model_history import Asked, audit_history

if TYPE_CHECKING:
    from .model_reference import Reference


def check_storage(ref: Reference, state: list[Job]) -> None:
    """Nothing more (no job applied twice, none invented, batches whole, one job per
    key), nothing less (every acknowledged push under its id), and every job born
    with what its push asked for."""
    archived = ref.archives.jobs(ref.store)
    archived_ids = [job.id for job in archived]
    assert len(archived_ids) == len(set(archived_ids)), "a job was archived twice"
    jobs: dict[str, Job] = {job.id: job for job in archived}
    jobs.update((job.id, job) for job in state)
    by_payload: dict[bytes, str] = {}
    by_key: dict[tuple[str, str], str] = {}
    for job_id, job in jobs.items():
        spec = ref.specs.get(job.born.payload)
        assert spec is not None, f"{job_id} holds a payload nobody pushed"
        assert job.born.payload not in by_payload, (
            f"{job_id} and {by_payload[job.born.payload]}: one push"
        )
        by_payload[job.born.payload] = job_id
        ref.payload_of.setdefault(job_id, job.born.payload)
        _check_born(ref, job, spec)
        if spec.identity is not None:
            other = by_key.setdefault(spec.identity, job_id)
            assert other == job_id, f"{other} and {job_id}: two jobs with key {spec.identity}"
        limit = limit_of(ref.config, job)
        assert limit is None or job.attempts <= limit, f"{job_id}: attempts past {limit}"
    for job_id, payload in ref.created.items():
        assert job_id in jobs, f"acknowledged push {job_id} lost"
        assert jobs[job_id].born.payload == payload, f"{job_id} holds another payload"
    for job_id, identity in ref.existing.items():
        assert job_id in jobs, f"acknowledged (existing) {job_id} lost"
        assert ref.specs[jobs[job_id].born.payload].identity == identity
    for rid, (command, _) in ref.requests.items():
        if isinstance(command, PushBatch) and command.payloads:
            _check_batch_whole(ref, rid, command, by_payload, by_key)


def _check_born(ref: Reference, job: Job, spec: Spec) -> None:
    born = job.born
    assert (born.queue, born.priority, born.key, born.max_attempts) == (
        spec.queue,
        spec.priority,
        spec.key,
        spec.max_attempts,
    ), f"{job.id} born with other options than its push's"
    low, high = ref.timeline.lowest(spec.submitted), ref.timeline.highest(spec.submitted)
    assert low - EPSILON <= born.created_at <= high + EPSILON
    if spec.delay is not None and spec.delay > 0:
        assert born.run_at is not None, f"{job.id} lost its delay"
        assert low + spec.delay - EPSILON <= born.run_at <= high + spec.delay + EPSILON
    elif spec.run_at is not None:
        if born.run_at is None:
            assert spec.run_at <= high + EPSILON, f"{job.id} lost its run-at"
        else:
            assert born.run_at == spec.run_at
    else:
        assert born.run_at is None


def _check_batch_whole(
    ref: Reference,
    rid: int,
    command: PushBatch,
    by_payload: dict[bytes, str],
    by_key: dict[tuple[str, str], str],
) -> None:
    items = command.new_jobs()
    landed = [item.payload in by_payload for item in items]
    if not any(landed):
        return
    for item, made in zip(items, landed, strict=True):
        identity = None if item.key is None else (item.queue, item.key)
        assert made or (identity is not None and identity in by_key), f"batch {rid} landed in part"


def check_endings_stay(ref: Reference, state: list[Job]) -> None:
    """Acknowledged endings are final: completed, cancelled, purged (leaving)."""
    for job in state:
        was = f"{job.id} is {job.status.value} after an acknowledged"
        if job.id in ref.acked_completions:
            assert job.status is JobStatus.COMPLETED, f"{was} completion"
        if job.id in ref.known_cancelled:
            assert job.status is JobStatus.CANCELLED, f"{was} cancel"
        if job.id in ref.known_purged:
            assert job.status is JobStatus.DEAD, f"{was} purge"
            assert leaving(job), f"{job.id} purged, not leaving"


def check_archived(
    ref: Reference, remaining: list[Job], jobs_of: Callable[[bytes], list[Job]]
) -> None:
    """Once everything settled: every acknowledged ending archived with its status
    (and result), and the whole history of the state allowed (``jobs_of`` reads a
    stored version's jobs, inline and untouched)."""
    assert not [j.id for j in remaining if leaving(j)], "finished jobs never archived"
    archived = {job.id: job for job in ref.archives.jobs(ref.store)}
    endings = [
        (ref.acked_completions, {JobStatus.COMPLETED}),
        (ref.known_cancelled, {JobStatus.CANCELLED}),
        (ref.cancel_marked, {JobStatus.CANCELLED, JobStatus.COMPLETED}),
        (ref.known_purged, {JobStatus.DEAD}),
    ]
    for ids, statuses in endings:
        for job_id in ids:
            job = archived.get(job_id)
            assert job is not None, f"{job_id} never archived"
            assert job.status in statuses, f"{job_id} archived {job.status.value}"
    for job_id in ref.acked_completions:
        assert archived[job_id].result in ref.results[job_id], f"{job_id}: another result"
    asked = Asked(
        ref.config,
        ref.timeline,
        ref.emitted,
        ref.redrives,
        ref.purges,
        ref.cancels,
        ref.not_applied,
        ref.broker_started,
    )
    last_seen = audit_history(ref.store.states, asked, jobs_of)
    present = {job.id for job in remaining}
    for job_id, job in last_seen.items():
        if job_id not in present:
            assert job_id in archived, f"{job_id} left the state and was never archived"
            assert archived[job_id].status is job.status
