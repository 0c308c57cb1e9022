"""The model's audit of the core's notices (osqueue_core/notices.py): news for the logs,
so what is checked is that the news is true when it is taken.

* every notice names a state version (epoch, revision) that **this broker** has
  already landed: nothing is reported before it is durable, or at a revision another
  broker wrote;
* a broker's commit notices come in strictly increasing revisions, with the size of
  the version that landed, and say ``released`` exactly when that version does;
* a job notice names a job the version carries, in its queue; a dead letter is dead
  there with the reason noticed, and a lease that ran out is no longer held by its
  worker for the same attempt, unless a redrive named the job (a job that died can be
  redriven, and claimed again, before the same write goes out);
* nothing is dropped (the model takes notices after every input).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from osqueue_core import (
    Broker,
    Command,
    Committed,
    Job,
    JobDead,
    JobStatus,
    LeaseExpired,
    Redrive,
    decode_header,
)

from .model_basics import RecordingStore


class NoticeAudit:
    """Checks the notices of every broker against ``store``'s history of the state;
    ``requests`` are the commands sent (to know the redrives), ``jobs_of`` reads a
    stored version's jobs (inline and in its segments)."""

    def __init__(
        self,
        store: RecordingStore,
        requests: Mapping[int, tuple[Command, int]],
        jobs_of: Callable[[bytes], list[Job]],
    ) -> None:
        self._store = store
        self._requests = requests
        self._jobs_of = jobs_of
        self._indexed = 0
        #: (incarnation, epoch, revision) -> the bytes of that landed version.
        self._landed: dict[tuple[str, int, int], bytes] = {}
        self._last_commit: dict[str, int] = {}
        self.taken = 0

    def _index(self) -> None:
        states = self._store.states
        for _, data in states[self._indexed :]:
            header = decode_header(data)
            owner = header.owner
            self._landed[(owner.incarnation, owner.epoch, header.revision)] = data
        self._indexed = len(states)

    def _redriven(self, job: Job) -> bool:
        return any(
            isinstance(command, Redrive)
            and (job.id in command.job_ids or command.queue == job.queue)
            for command, _ in self._requests.values()
        )

    def check(self, broker: Broker) -> None:
        notices, dropped = broker.take_notices()
        assert dropped == 0, f"{dropped} notices dropped"
        if not notices:
            return
        self._index()
        incarnation = broker.incarnation
        for notice in notices:
            self.taken += 1
            data = self._landed.get((incarnation, notice.epoch, notice.revision))
            assert data is not None, (
                f"{notice!r}: broker {broker.identity} has landed no state of epoch "
                f"{notice.epoch}, revision {notice.revision}"
            )
            if isinstance(notice, Committed):
                last = self._last_commit.get(incarnation, 0)
                assert notice.revision > last, f"{notice!r} after revision {last}"
                self._last_commit[incarnation] = notice.revision
                assert notice.state_bytes == len(data), notice
                assert notice.released == decode_header(data).owner.released, notice
                continue
            jobs = [job for job in self._jobs_of(data) if job.id == notice.job_id]
            assert jobs, f"{notice!r}: revision {notice.revision} does not carry the job"
            [job] = jobs
            assert job.queue == notice.queue, notice
            if self._redriven(job):
                continue
            if isinstance(notice, JobDead):
                assert job.status is JobStatus.DEAD, f"{notice!r}, but the job is {job.status}"
                assert job.last_error == notice.reason, notice
            elif isinstance(notice, LeaseExpired):
                assert not (
                    job.status is JobStatus.CLAIMED
                    and job.claimed_by == notice.worker_id
                    and job.attempts == notice.attempts
                ), f"{notice!r}, but the worker still holds that attempt"
