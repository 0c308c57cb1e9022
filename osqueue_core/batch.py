"""Group-commit bookkeeping: the open batch, grants in it, and a write on its way."""

from __future__ import annotations

import attrs

from osqueue_core.commands import RequestId
from osqueue_core.effects import Reply
from osqueue_core.job import Job
from osqueue_core.notices import JobNotice
from osqueue_core.tally import JobTally


@attrs.frozen
class Grant:
    """A claim granted in a batch whose reply is not released yet.

    Kept so the grant can be taken back if its caller leaves (``cancel_claim``) or is
    answered with an error instead: ``jobs`` holds each job granted as (the job as it
    was, the job as the grant made it).
    """

    request_id: RequestId
    jobs: tuple[tuple[Job, Job], ...]


@attrs.define
class Batch:
    """Changes and held replies gathered since the last state operation was issued.

    Replies held here are released only when the next state operation lands: the write
    that makes the batch durable, or (for a batch that changed nothing durable, such as
    heartbeats) a check that this broker still owns the state.
    """

    replies: list[Reply] = attrs.Factory(list)
    #: The jobs changed durably: this batch needs a write.
    dirty: bool = False
    payload_bytes: int = 0
    first_change_at: float | None = None
    #: Archive keys of jobs finished in this batch, written once the batch lands.
    archive_keys: set[str] = attrs.Factory(set)
    #: Claims granted in this batch, by request id, until their replies are released.
    grants: dict[RequestId, Grant] = attrs.Factory(dict)
    #: Grants whose caller left after the batch went out: the jobs are handed back once
    #: the batch has landed.
    abandoned: list[Grant] = attrs.Factory(list)
    #: Leases that ran out and jobs that died in this batch: noticed once it lands.
    notices: list[JobNotice] = attrs.Factory(list)
    #: Lease expiries, retries and deaths among its changes (counted once it lands).
    tally: JobTally = attrs.Factory(JobTally)

    def hold(self, reply: Reply) -> None:
        self.replies.append(reply)

    def changed(self, now: float) -> None:
        if not self.dirty:
            self.dirty = True
            self.first_change_at = now

    def withdraw(self, request_id: RequestId) -> None:
        """Drop the held reply to ``request_id`` (it was answered otherwise)."""
        self.replies = [reply for reply in self.replies if reply.request_id != request_id]

    def needs_operation(self) -> bool:
        return self.dirty or bool(self.replies)


@attrs.frozen
class PendingWrite:
    """A state write issued and not yet known to have landed: its exact bytes are what
    gets re-sent if it did not land (a batch is never applied twice)."""

    revision: int
    data: bytes = attrs.field(repr=lambda data: f"<{len(data)} bytes>")
    batch: Batch
    takeover: bool = False
    release: bool = False
