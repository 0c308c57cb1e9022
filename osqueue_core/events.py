"""Storage results: what happened to a storage effect, reported back to the core.

Each names the ``op_id`` of the effect it answers. A runtime reports what happened and
never decides what to do about it: retries, fencing and resolution are the core's.
"""

from __future__ import annotations

import attrs


@attrs.frozen
class ObjectRead:
    """A :class:`~osqueue_core.effects.ReadObject` finished.

    ``data`` and ``version`` are None when the object does not exist. ``version`` is
    the storage's opaque version token, handed back in a later ``WriteObject``.
    """

    op_id: int
    data: bytes | None = attrs.field(repr=lambda data: "None" if data is None else "<bytes>")
    version: object | None


@attrs.frozen
class VersionRead:
    """A :class:`~osqueue_core.effects.ReadVersion` finished (None: no object)."""

    op_id: int
    version: object | None


@attrs.frozen
class ObjectWritten:
    """A :class:`~osqueue_core.effects.WriteObject` landed; ``version`` is the new token."""

    op_id: int
    version: object


@attrs.frozen
class WriteConflicted:
    """A conditional write was refused: the object changed, already existed, or (for an
    update) is missing. Nothing was written by this attempt."""

    op_id: int


@attrs.frozen
class KeysListed:
    """A :class:`~osqueue_core.effects.ListKeys` finished: the keys, sorted."""

    op_id: int
    keys: tuple[str, ...]


@attrs.frozen
class ObjectDeleted:
    """A :class:`~osqueue_core.effects.DeleteObject` finished: the object is gone (or was
    absent already)."""

    op_id: int


@attrs.frozen
class ObjectCorrupt:
    """The store found the object damaged (truncated, not written by osqueue): a read
    cannot succeed by retrying. The core never overwrites such an object."""

    op_id: int
    message: str = ""


@attrs.frozen
class StorageFailed:
    """An operation failed. ``outcome_unknown`` is True when a write may have landed
    anyway (timeouts, 5xx, reset connections), False when it certainly did not."""

    op_id: int
    outcome_unknown: bool
    message: str = ""


StorageResult = (
    ObjectRead
    | VersionRead
    | ObjectWritten
    | WriteConflicted
    | KeysListed
    | ObjectDeleted
    | ObjectCorrupt
    | StorageFailed
)
