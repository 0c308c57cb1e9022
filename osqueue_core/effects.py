"""Effects: what the core asks its runtime to do, drained from ``Broker.take_effects()``.

Storage effects carry an ``op_id``; the runtime answers each with exactly one storage
result naming it (:mod:`osqueue_core.events`). Independent effects may run concurrently;
the core never has more than one state operation outstanding.
"""

from __future__ import annotations

import attrs

from osqueue_core.commands import RequestId
from osqueue_core.errors import OsqueueError
from osqueue_core.results import Result


@attrs.frozen
class ReadState:
    """Read the state object at ``key``; answer with ``StateRead`` (or ``StorageFailed``)."""

    op_id: int
    key: str


@attrs.frozen
class WriteState:
    """Write ``data`` to ``key`` only if its version is still ``expected_version``.

    ``expected_version`` None means create-only (the object must not exist). Answer with
    ``StateWritten``, ``WriteConflicted`` or ``StorageFailed``. ``revision`` is the
    revision inside ``data``, for logs.
    """

    op_id: int
    key: str
    data: bytes
    expected_version: object | None
    revision: int


@attrs.frozen
class WriteArchive:
    """Create the immutable archive object ``key`` (create-only, never overwrite).

    Answer ``ArchiveWritten`` (with ``already_existed=True`` when it was there already)
    or ``StorageFailed``.
    """

    op_id: int
    key: str
    data: bytes


@attrs.frozen
class Reply:
    """The one answer to request ``request_id``: a ``result`` or an ``error``."""

    request_id: RequestId
    result: Result | None = None
    error: OsqueueError | None = attrs.field(default=None, eq=False)

    @property
    def ok(self) -> bool:
        return self.error is None


Effect = ReadState | WriteState | WriteArchive | Reply
