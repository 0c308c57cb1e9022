"""Effects: what the core asks its runtime to do, drained from ``Broker.take_effects()``.

Storage effects are five primitives every object store offers; each carries an
``op_id`` and the runtime answers it with exactly one storage result naming it
(:mod:`osqueue_core.events`). What an operation is *for* (taking the state over,
committing a batch, archiving, confirming ownership) is the core's business: a runtime
only performs the primitive and reports what storage did. Independent effects may run
concurrently and finish in any order.
"""

from __future__ import annotations

import attrs

from osqueue_core.commands import RequestId
from osqueue_core.errors import OsqueueError
from osqueue_core.results import Result


@attrs.frozen
class ReadObject:
    """Read the object at ``key``: answer ``ObjectRead`` (data and version, both None
    when absent), ``ObjectCorrupt`` when the store finds it damaged, or
    ``StorageFailed``."""

    op_id: int
    key: str


@attrs.frozen
class ReadVersion:
    """Read only the current version token of ``key`` (an HTTP HEAD): answer
    ``VersionRead`` (None when absent), ``ObjectCorrupt`` or ``StorageFailed``."""

    op_id: int
    key: str


@attrs.frozen
class WriteObject:
    """Write ``data`` to ``key`` only if its version is still ``expected_version``.

    ``expected_version`` None means create-only (the object must not exist). Answer
    ``ObjectWritten`` with the new version; ``WriteConflicted`` when the precondition
    failed (the object exists, changed, or is missing on update); ``StorageFailed``
    otherwise, with ``outcome_unknown`` True unless the write certainly did not land.
    """

    op_id: int
    key: str
    data: bytes = attrs.field(repr=lambda data: f"<{len(data)} bytes>")
    expected_version: object | None


@attrs.frozen
class ListKeys:
    """List the keys under ``prefix`` (whole ``/`` segments): answer ``KeysListed`` with
    them sorted, or ``StorageFailed``. With ``limit``, at most that many keys, and at
    least one if any exists. With ``start_after``, only the keys that sort after it (the
    next page of a listing whose last key it is)."""

    op_id: int
    prefix: str
    limit: int | None = None
    start_after: str | None = None


@attrs.frozen
class DeleteObject:
    """Delete the object at ``key``: answer ``ObjectDeleted``, also when it was absent
    already, or ``StorageFailed`` (``outcome_unknown`` True unless it certainly was not
    deleted). The core deletes only objects nothing can reference any more."""

    op_id: int
    key: str


@attrs.frozen
class Reply:
    """The one answer to request ``request_id``: a ``result`` or an ``error``."""

    request_id: RequestId
    result: Result | None = None
    error: OsqueueError | None = attrs.field(default=None, eq=False)

    @property
    def ok(self) -> bool:
        return self.error is None


StorageEffect = ReadObject | ReadVersion | WriteObject | ListKeys | DeleteObject
Effect = StorageEffect | Reply
