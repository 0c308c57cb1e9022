"""Archive writes: finished jobs go to immutable objects, exactly once, never lost.

Finished jobs leave the state in three steps, each after the previous one is durable:
the commit that finishes them names their archive key; then the archive object is
created (create-only); then the jobs are dropped from the head state (the next write
drops them from storage). A create that finds its key taken reads the object back: if
it holds exactly our jobs (same ids, seqs and payloads), an earlier attempt of ours
landed and we go on; anything else means the key was used by somebody else (a state
restored from a backup, an edited bucket), and our jobs move to a fresh key in the next
commit instead of being dropped unarchived. Writes for different keys run concurrently
with each other and with the state operation; a failed one is retried per key with
backoff.
"""

from __future__ import annotations

from collections.abc import Callable

from osqueue_core.backoffs import KeyBackoffs
from osqueue_core.batch import Batch
from osqueue_core.clock import Clock
from osqueue_core.codec import ArchivedJob, decode_archive_jobs
from osqueue_core.config import BrokerConfig
from osqueue_core.effects import ReadObject, WriteObject
from osqueue_core.events import (
    ObjectRead,
    ObjectWritten,
    StorageFailed,
    StorageResult,
    WriteConflicted,
)
from osqueue_core.outbox import Outbox
from osqueue_core.rules import CommitContext, JobRules


class Archiver:
    """Archive objects being written, and failed ones waiting for their retry.

    ``open_batch`` and ``context`` give the commit protocol's open batch and context:
    dropping archived jobs and moving them to a fresh key are changes committed with it.
    """

    def __init__(
        self,
        config: BrokerConfig,
        clock: Clock,
        outbox: Outbox,
        rules: JobRules,
        open_batch: Callable[[], Batch],
        context: Callable[[], CommitContext],
    ) -> None:
        self._config = config
        self._clock = clock
        self._out = outbox
        self._rules = rules
        self._open_batch = open_batch
        self._context = context
        self._in_flight: set[str] = set()
        self._backoffs = KeyBackoffs(config, clock)
        self._active = True
        #: Keys found holding somebody else's jobs (their jobs moved to fresh keys).
        self.collisions = 0

    def write(self, key: str) -> None:
        """Create the archive object for ``key`` (unless already under way)."""
        if not self._active or key in self._in_flight:
            return
        self._backoffs.trying(key)
        data, jobs = self._rules.archive_contents(key)
        if not jobs:
            self._backoffs.succeeded(key)
            return  # nothing left under it (already archived, or moved to another key)
        self._in_flight.add(key)
        self._out.issue(
            lambda op_id: WriteObject(op_id, key, data, None),
            lambda result: self._on_write(key, jobs, result),
        )

    def pump(self) -> None:
        """Retry the keys whose backoff has passed."""
        for key in self._backoffs.due():
            self.write(key)

    def next_deadline(self) -> float | None:
        return self._backoffs.next_deadline()

    def stop(self) -> None:
        """No more archive writes: a stopped broker leaves them to its successor."""
        self._active = False
        self._backoffs.clear()

    def _on_write(self, key: str, jobs: list[ArchivedJob], result: StorageResult) -> None:
        if not self._active:
            return
        if isinstance(result, ObjectWritten):
            self._archived(key)
        elif isinstance(result, WriteConflicted):
            # Ours from an earlier attempt, or somebody else's? Read it and compare.
            self._out.issue(
                lambda op_id: ReadObject(op_id, key),
                lambda found: self._on_read_back(key, jobs, found),
            )
        else:  # failed, or outcome unknown: the retry finds out (a conflict, then a read)
            self._failed(key)

    def _on_read_back(self, key: str, jobs: list[ArchivedJob], result: StorageResult) -> None:
        if not self._active:
            return
        data = result.data if isinstance(result, ObjectRead) else None
        if isinstance(result, StorageFailed) or (isinstance(result, ObjectRead) and data is None):
            self._failed(key)  # unreadable for now, or gone again: create it again later
            return
        found = decode_archive_jobs(data) if data is not None else None
        if found == jobs:
            self._archived(key)
            return
        # Somebody else's object (or a damaged one): never drop our jobs on its
        # strength; they move to a fresh key, committed with the next write.
        self._in_flight.discard(key)
        self._backoffs.succeeded(key)
        self.collisions += 1
        self._rules.reassign_archive(key, self._open_batch(), self._context())

    def _archived(self, key: str) -> None:
        self._in_flight.discard(key)
        self._backoffs.succeeded(key)
        # The archive object is durable: the jobs may now leave the state.
        self._rules.drop_archived(key, self._open_batch())

    def _failed(self, key: str) -> None:
        self._in_flight.discard(key)
        self._backoffs.failed(key)
