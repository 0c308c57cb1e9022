"""The audit of the state object's history (tests/core/test_model.py runs it once every
reply is in): every change from one stored version to the next must be one the
lifecycle allows, whoever made it, acknowledged or not.

Between two versions, one broker applied some commands (and the passing of time) after
it encoded the first; the wall clocks it saw lie between the step the first was handed
to storage and the step the second landed. Checked for every job:

* what it was born with never changes; a finished job on its way to the archive does
  not change, and leaves the state only once it has an archive key;
* a ready job is claimed only once the wall clock has reached its run-at (its born
  run-at, or its retry's), at some time since it became as it is, as seen by the broker
  that claimed it (one that took over judges by its own clock, never by the wall clocks
  its predecessor saw: a clock behind is waited for, in segments' due windows too);
* a dead letter changes only when a redrive (back to ready, attempts reset) or a purge
  named it, by id or queue (or it grew older than ``dead_retention``, or another job
  died with the dead-letter list full);
* a job is cancelled, or marked for cancelling, only when a cancel for it was sent;
* no job has more attempts than its limit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import attrs

from osqueue_core import BrokerConfig, Job, JobStatus, Purge, Redrive, decode_header, decode_state

from .model_basics import EPSILON, Timeline, dead_letter, leaving, limit_of, ready_at


@attrs.frozen
class Sent:
    """A Redrive, Purge or Cancel the model sent: when, and whether it is known to
    have changed nothing."""

    rid: int
    submitted: int
    command: object


@attrs.define
class Asked:
    """What the clients asked for, and what is known to have changed nothing: what
    :func:`audit_history` needs from the model once every reply is in."""

    config: BrokerConfig
    timeline: Timeline
    #: The step at which each state object's bytes were first handed to storage.
    emitted: dict[bytes, int]
    redrives: list[Sent]
    purges: list[Sent]
    #: Job id -> steps at which a Cancel for it was sent.
    cancels: dict[str, list[int]]
    #: Requests answered with an error that proves they changed nothing.
    not_applied: set[int]
    #: Broker incarnation -> the step it started at (it saw no wall clock before).
    started: dict[str, int] = attrs.Factory(dict)

    def covered(self, sent: Iterable[Sent], job: Job, until: int) -> bool:
        """Whether a Redrive/Purge in ``sent``, sent by step ``until`` and not known to
        have changed nothing, names ``job`` or its queue."""
        for entry in sent:
            command = entry.command
            assert isinstance(command, Redrive | Purge)
            if entry.submitted > until or entry.rid in self.not_applied:
                continue
            if job.id in command.job_ids or command.queue == job.born.queue:
                return True
        return False

    def cancelled_by(self, job_id: str, until: int) -> bool:
        return any(step <= until for step in self.cancels.get(job_id, ()))


def audit_history(
    states: list[tuple[int, bytes]],
    asked: Asked,
    jobs_of: Callable[[bytes], list[Job]] = lambda data: decode_state(data).jobs,
) -> dict[str, Job]:
    """Check every change between consecutive state objects that landed (see the module
    docstring); returns the last version of every job that was ever in the state.
    ``jobs_of`` reads a state's jobs (inline, and untouched in its segments)."""
    config = asked.config
    last_seen: dict[str, Job] = {}
    previous: dict[str, Job] = {}
    #: The step since which each job has been as it is now (a broker may have promoted
    #: a ready job in memory at any wall clock since then).
    unchanged_since: dict[str, int] = {}
    since = 0
    for landed, data in states:
        jobs = {job.id: job for job in jobs_of(data)}
        highest = asked.timeline.highest(since, landed)
        # Whoever wrote this version judged due times by the wall clocks it saw.
        began = asked.started.get(decode_header(data).owner.incarnation, 0)
        deaths = any(
            job.status is JobStatus.DEAD
            and (
                (before := previous.get(job.id)) is None
                or before.status is not JobStatus.DEAD
                or before.finished_at != job.finished_at
            )
            for job in jobs.values()
        )
        for job_id, before in previous.items():
            after = jobs.get(job_id)
            if after is None:
                assert leaving(before), f"{job_id} left the state without being archived"
                continue
            promoted = asked.timeline.highest(max(unchanged_since[job_id], began), landed)
            _audit_job(before, after, asked, landed, highest, promoted, deaths)
        for job in jobs.values():
            if previous.get(job.id) != job:
                unchanged_since[job.id] = since
            limit = limit_of(config, job)
            assert limit is None or job.attempts <= limit, (
                f"{job.id} has {job.attempts} attempts, more than its {limit}"
            )
            last_seen[job.id] = job
        previous = jobs
        assert data in asked.emitted, "a state version landed that no broker wrote"
        since = asked.emitted[data]
    return last_seen


def _audit_job(
    before: Job,
    after: Job,
    asked: Asked,
    landed: int,
    highest: float,
    promoted: float,
    deaths: bool,
) -> None:
    """``highest``: the latest wall clock between the two versions; ``promoted``: the
    latest since ``before`` came to be as it is."""
    job_id = before.id
    assert after.born == before.born, f"{job_id} changed what it was born with"
    if leaving(before):
        assert attrs.evolve(after, archive_key=before.archive_key) == before, (
            f"{job_id} changed on its way to the archive"
        )
        return
    if dead_letter(before) and after != before:
        purged = (
            after.status is JobStatus.DEAD
            and leaving(after)
            and (after.attempts, after.finished_at) == (before.attempts, before.finished_at)
        )
        if purged:
            expired = (before.finished_at or 0.0) + asked.config.dead_retention <= highest
            assert asked.covered(asked.purges, before, landed) or expired or deaths, (
                f"dead letter {job_id} left the state: no purge named it, it was not too "
                "old and no other job died"
            )
        else:
            assert asked.covered(asked.redrives, before, landed), (
                f"dead letter {job_id} changed ({after.status.value}) without a redrive"
            )
            assert after.status is not JobStatus.DEAD or after.attempts >= 1
    if before.status is JobStatus.READY and after != before:
        claimed = after.attempts != before.attempts or after.status not in (
            JobStatus.READY,
            JobStatus.CANCELLED,
        )
        if after.status is JobStatus.READY:
            claimed = True  # nothing but a claim changes a ready job and leaves it ready
        due = ready_at(before)
        if claimed and due is not None:
            assert due <= promoted + EPSILON, (
                f"{job_id} was claimed before its run-at {due} (the wall clock reached at "
                f"most {promoted})"
            )
    newly_cancelled = after.status is JobStatus.CANCELLED and before.status is not after.status
    if newly_cancelled or (after.cancel_requested and not before.cancel_requested):
        assert asked.cancelled_by(job_id, landed), f"{job_id} cancelled, but nobody asked"
