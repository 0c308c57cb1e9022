"""Where the core's parts put effects (and notices, :mod:`osqueue_core.notices`), and how
storage results find their way back.

Every storage effect gets an ``op_id`` and a handler (the part that issued it). A
result is checked against the kind of effect it answers (a mismatch is a runtime bug:
``InvalidArgument``, nothing changes) and handed to that handler. Results for
operations nobody waits for any more (the broker failed or stopped meanwhile) are
ignored: nothing was acknowledged on them.
"""

from __future__ import annotations

from collections.abc import Callable

from osqueue_core.effects import (
    DeleteObject,
    Effect,
    ListKeys,
    ReadObject,
    ReadVersion,
    Reply,
    StorageEffect,
    WriteObject,
)
from osqueue_core.errors import InvalidArgument
from osqueue_core.events import (
    KeysListed,
    ObjectCorrupt,
    ObjectDeleted,
    ObjectRead,
    ObjectWritten,
    StorageFailed,
    StorageResult,
    VersionRead,
    WriteConflicted,
)
from osqueue_core.notices import Notices

Handler = Callable[[StorageResult], None]

#: The results that may answer each kind of storage effect.
ANSWERS: dict[type, tuple[type, ...]] = {
    ReadObject: (ObjectRead, ObjectCorrupt, StorageFailed),
    ReadVersion: (VersionRead, ObjectCorrupt, StorageFailed),
    WriteObject: (ObjectWritten, WriteConflicted, StorageFailed),
    ListKeys: (KeysListed, StorageFailed),
    DeleteObject: (ObjectDeleted, StorageFailed),
}


class Outbox:
    """Effects waiting to be taken, and the handlers of operations in flight."""

    def __init__(self) -> None:
        self._effects: list[Effect] = []
        self._next_op_id = 1
        self._waiting: dict[int, tuple[type, Handler]] = {}
        #: What the broker did, for logs (nothing depends on them being taken).
        self.notices = Notices()

    def issue(self, make: Callable[[int], StorageEffect], handler: Handler) -> int:
        """Emit the storage effect ``make(op_id)``; its result goes to ``handler``."""
        op_id = self._next_op_id
        self._next_op_id += 1
        effect = make(op_id)
        self._waiting[op_id] = (type(effect), handler)
        self._effects.append(effect)
        return op_id

    def reply(self, reply: Reply) -> None:
        self._effects.append(reply)

    def handler_for(self, result: StorageResult) -> Handler | None:
        """The handler waiting for ``result`` (now no longer waiting), or None."""
        entry = self._waiting.get(result.op_id)
        if entry is None:
            return None
        kind, handler = entry
        if not isinstance(result, ANSWERS[kind]):
            raise InvalidArgument(f"{type(result).__name__} is not an answer to {kind.__name__}")
        del self._waiting[result.op_id]
        return handler

    def forget(self) -> None:
        """Stop waiting for every operation in flight (the broker failed or stopped)."""
        self._waiting.clear()

    def take(self) -> list[Effect]:
        effects, self._effects = self._effects, []
        return effects
