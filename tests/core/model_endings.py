"""The model test's checks of replies that end or inspect a job: fail, release, cancel,
get, list dead letters, redrive, purge (tests/core/model_reference.py has the rest and
explains what the reference believes, and why)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from osqueue_core import (
    Cancel,
    Fail,
    Failed,
    GetJob,
    JobInfo,
    ListDead,
    Purge,
    Redrive,
    Release,
)

from .model_basics import EPSILON, backoff

if TYPE_CHECKING:
    from .model_reference import Reference

#: A job id nobody pushed.
BOGUS_ID = "999999999999-99"


def acked_fail(ref: Reference, command: Fail, result: Failed, rid: int, submitted: int) -> None:
    job_id, worker = command.job_id, command.worker_id
    assert result.job_id == job_id
    earlier = [(r, requeue) for r, requeue in ref.fails_sent.get((job_id, worker), []) if r < rid]
    if result.cancelled:
        assert result.dead
        assert result.retry_at is None
        assert job_id in ref.cancels, f"{job_id} ended cancelled, but nobody asked"
        ref.known_cancelled.add(job_id)
    elif result.dead:
        assert result.retry_at is None
        ref.learn_dead(job_id, submitted)
    else:
        # Retried: only a fail that asked for it, or a repeat answered from memory.
        assert command.requeue or any(requeue for _, requeue in earlier), (
            f"fail(retry=False) of {job_id} was retried"
        )
        assert result.retry_at is not None
        _check_backoff(ref, job_id, result.retry_at, min([rid, *(r for r, _ in earlier)]))
    marked = ref.cancel_marked.get(job_id)
    if marked is not None and marked < submitted and not earlier:
        assert result.cancelled, f"{job_id} failed after its cancel, not cancelled"
    ref.holds.pop(job_id, None)


def _check_backoff(ref: Reference, job_id: str, retry_at: float, first_rid: int) -> None:
    """``retry_at`` is a wall clock of the fail's window plus the documented backoff
    of one of the job's attempts; until then the job is not claimable."""
    spec = ref.spec_of(job_id)
    assert spec is not None
    since = ref.requests[first_rid][1]
    low, high = ref.timeline.lowest(since), ref.timeline.highest(since)
    limit = ref.limit(spec) or 10
    delays = [backoff(ref.config, spec.queue, job_id, n) for n in range(1, limit + 1)]
    assert any(low - EPSILON <= retry_at - d <= high + EPSILON for d in delays), (
        f"{job_id} retried at {retry_at}: not a wall clock in [{low}, {high}] plus a "
        f"backoff in {delays}"
    )
    ref.floors.setdefault(job_id, []).append((retry_at, since))


def acked_release(ref: Reference, command: Release, job_id: str, rid: int, submitted: int) -> None:
    hold = ref.holds.pop(job_id, None)
    marked = ref.cancel_marked.get(job_id)
    if marked is not None and marked < submitted:
        ref.known_cancelled.add(job_id)  # a released job with a cancel ends cancelled
    spec = ref.spec_of(job_id)
    if (
        hold is not None
        and spec is not None
        and hold.worker == command.worker_id
        and hold.generation == ref.generation == ref.generation_at[rid]
        and job_id not in ref.cancels
    ):
        # Back at its old place, and the attempt does not count.
        ref.fresh[job_id] = ref.fresh_entry(job_id, spec, attempts=hold.attempts - 1)


def acked_cancel(ref: Reference, command: Cancel, at_once: bool, rid: int, submitted: int) -> None:
    job_id = command.job_id
    assert job_id != BOGUS_ID, "a job nobody pushed was cancelled"
    for finished in (ref.acked_completions, ref.known_purged, ref.known_dead):
        assert job_id not in finished, f"finished {job_id} was cancelled"
    check_cancel_expectation(ref, rid, at_once)
    if at_once:
        ref.known_cancelled.add(job_id)
    else:
        ref.cancel_marked.setdefault(job_id, ref.timeline.step)


def check_cancel_expectation(ref: Reference, rid: int, at_once: bool | None) -> None:
    """A job known ready when the cancel was sent is cancelled at once; one known
    held (and still held) is marked. ``at_once`` None: refused as finished."""
    expected, hold = ref.cancel_expect.get(rid, ("", None))
    command = ref.requests[rid][0]
    assert isinstance(command, Cancel)
    job_id = command.job_id
    if ref.generation != ref.generation_at[rid]:
        return
    if expected == "ready" and ref.granted_step.get(job_id, -1) < ref.requests[rid][1]:
        assert at_once is True, f"ready {job_id}: cancel answered at_once={at_once}"
    if (
        expected == "claimed"
        and hold is not None
        and ref.holds.get(job_id) is hold
        and ref.now() < hold.deadline
        and (job_id, hold.worker) not in ref.relinquished
    ):
        assert at_once is False, f"claimed {job_id}: cancel answered at_once={at_once}"


def check_info(ref: Reference, command: GetJob, info: JobInfo, submitted: int) -> None:
    job_id = command.job_id
    assert info.id == job_id
    assert job_id != BOGUS_ID
    spec = ref.spec_of(job_id)
    assert spec is not None
    assert (info.queue, info.priority, info.key) == (spec.queue, spec.priority, spec.key)
    assert info.max_attempts == ref.limit(spec)
    assert info.max_attempts is None or info.attempts <= info.max_attempts
    assert (info.holder is not None) == (info.status == "claimed")
    assert info.run_at is None or info.status == "ready"
    if job_id in ref.acked_completions:
        assert info.status == "completed", f"completed {job_id} is {info.status}"
    if job_id in ref.known_cancelled:
        assert info.status == "cancelled", f"cancelled {job_id} is {info.status}"
    if job_id in ref.known_purged or job_id in ref.known_dead:
        assert info.status == "dead", f"dead {job_id} is {info.status}"
    fresh = ref.fresh.get(job_id)
    if fresh is not None and fresh.since < submitted:
        assert info.status == "ready", f"ready {job_id} is {info.status}"
        assert info.attempts == fresh.attempts, (
            f"ready {job_id} has {info.attempts} attempts, expected {fresh.attempts} (a "
            "release counted, or a claim did not)"
        )
    if info.cancel_requested:
        assert job_id in ref.cancels


def check_dead_letters(
    ref: Reference, command: ListDead, jobs: tuple[JobInfo, ...], more: bool, submitted: int
) -> None:
    assert len(jobs) <= command.limit
    assert not more or len(jobs) == command.limit
    ids = [info.id for info in jobs]
    assert len(set(ids)) == len(ids)
    assert command.after not in ids
    for info in jobs:
        assert info.status == "dead"
        assert info.holder is None
        assert command.queue is None or info.queue == command.queue
        for finished in (ref.acked_completions, ref.known_cancelled, ref.known_purged):
            assert info.id not in finished, f"{info.id} listed dead"
        spec = ref.spec_of(info.id)
        if spec is not None:
            assert (info.queue, info.priority, info.key) == (
                spec.queue,
                spec.priority,
                spec.key,
            )
        assert info.max_attempts is None or info.attempts <= info.max_attempts
        ref.learn_dead(info.id, submitted)


def _check_selection(ref: Reference, command: Redrive | Purge, job_ids: tuple[str, ...]) -> None:
    if command.job_ids:
        assert job_ids == tuple(dict.fromkeys(command.job_ids)), (
            f"{type(command).__name__} of {command.job_ids} answered for {job_ids}"
        )
    for job_id in job_ids:
        spec = ref.spec_of(job_id)
        assert command.queue is None or spec is None or spec.queue == command.queue, (
            f"{type(command).__name__} of queue {command.queue} took {job_id}"
        )
        for finished in (ref.acked_completions, ref.known_cancelled, ref.known_purged):
            assert job_id not in finished, f"finished {job_id} was a dead letter"
        assert job_id not in ref.fresh, f"ready {job_id} was a dead letter"


def acked_redrive(ref: Reference, command: Redrive, job_ids: tuple[str, ...], rid: int) -> None:
    _check_selection(ref, command, job_ids)
    for job_id in job_ids:
        ref.known_dead.pop(job_id, None)
        spec = ref.spec_of(job_id)
        # A cancel of the dead job sent before this answer and not answered yet may take
        # effect after the redrive (the same batch may redrive it, then cancel it): the
        # job is then archived cancelled, not ready. Its cancel_sent dropped it from what
        # is known ready; this answer must not bring it back. (A cancel answered already
        # took effect before the redrive, if at all, and a redrive does not pick a
        # cancelled job.)
        if (
            spec is not None
            and ref.generation_at[rid] == ref.generation
            and not _cancel_unanswered(ref, job_id)
        ):
            ref.fresh[job_id] = ref.fresh_entry(job_id, spec, attempts=0)


def _cancel_unanswered(ref: Reference, job_id: str) -> bool:
    return any(
        isinstance(command, Cancel) and command.job_id == job_id and rid not in ref.answered
        for rid, (command, _) in ref.requests.items()
    )


def acked_purge(ref: Reference, command: Purge, job_ids: tuple[str, ...]) -> None:
    _check_selection(ref, command, job_ids)
    ref.known_purged.update(job_ids)
