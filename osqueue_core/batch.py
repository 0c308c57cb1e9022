"""Group-commit bookkeeping: the open batch, and the one state operation in flight."""

from __future__ import annotations

import enum

import attrs

from osqueue_core.effects import Reply


@attrs.define
class Batch:
    """Changes and held replies gathered since the last state operation was issued.

    Replies held here are released only when the next state operation lands: the write
    that makes the batch durable, or (for a batch that changed nothing durable, such as
    heartbeats) a read that confirms this broker still owns the state.
    """

    replies: list[Reply] = attrs.Factory(list)
    #: The jobs changed durably: this batch needs a write.
    dirty: bool = False
    payload_bytes: int = 0
    first_change_at: float | None = None
    #: Archive keys of jobs finished in this batch, written once the batch lands.
    archive_keys: set[str] = attrs.Factory(set)

    def needs_operation(self) -> bool:
        return self.dirty or bool(self.replies)


@attrs.frozen
class PendingWrite:
    """A state write issued and not yet known to have landed."""

    revision: int
    data: bytes
    batch: Batch
    takeover: bool = False
    release: bool = False


class Purpose(enum.Enum):
    """Why a state operation was issued; decides how its result is read."""

    #: Read the state to take it over (on start, and after a takeover write failed).
    TAKEOVER_READ = enum.auto()
    TAKEOVER_WRITE = enum.auto()
    BATCH_WRITE = enum.auto()
    #: Read after an ambiguous write: did it land?
    RESOLVE_READ = enum.auto()
    #: Read that proves this broker still owns the state, to release held replies.
    CONFIRM_READ = enum.auto()


@attrs.frozen
class StateOperation:
    """The single state operation in flight (or waiting to be retried)."""

    op_id: int
    purpose: Purpose
    write: PendingWrite | None = None
    batch: Batch | None = None
