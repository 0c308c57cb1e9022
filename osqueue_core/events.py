"""Storage results: what happened to an effect, reported back to the core by a runtime.

Each names the ``op_id`` of the effect it answers. A runtime reports what happened and
never decides what to do about it: retries, fencing and resolution are the core's.
"""

from __future__ import annotations

import attrs


@attrs.frozen
class StateRead:
    """A :class:`~osqueue_core.effects.ReadState` finished.

    ``data`` and ``version`` are None when the state object does not exist. ``version``
    is the storage's opaque version token, handed back in a later ``WriteState``.
    """

    op_id: int
    data: bytes | None
    version: object | None


@attrs.frozen
class StateWritten:
    """A :class:`~osqueue_core.effects.WriteState` landed; ``version`` is the new token."""

    op_id: int
    version: object


@attrs.frozen
class WriteConflicted:
    """A conditional write was refused: the object changed (or already existed)."""

    op_id: int


@attrs.frozen
class StorageFailed:
    """An operation failed. ``outcome_unknown`` is True when a write may have landed
    anyway (timeouts, 5xx, reset connections), False when it certainly did not."""

    op_id: int
    outcome_unknown: bool
    message: str = ""


@attrs.frozen
class ArchiveWritten:
    """A :class:`~osqueue_core.effects.WriteArchive` is durable; ``already_existed``
    when the create-only write found the object there (an earlier attempt landed)."""

    op_id: int
    already_existed: bool = False


StorageResult = StateRead | StateWritten | WriteConflicted | StorageFailed | ArchiveWritten
