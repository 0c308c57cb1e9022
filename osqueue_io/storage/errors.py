"""Every error the storage layer raises.

All derive from :class:`StorageError` (itself an :class:`~osqueue_core.errors.OsqueueError`),
so a runtime can catch one class and map it with ``error.grpc_status``. The classes
answer the only question that matters after a failed write: *did it land?*

- :class:`WriteConflict`: no. The object was not at the expected version, or is absent.
- :class:`AlreadyExists`: no. ``create`` found the key taken.
- :class:`WriteNotApplied`: no. The request was refused, or never sent.
- :class:`OutcomeUnknown`: maybe. Re-read the object to find out.
- :class:`CorruptObject`: no, and retrying will not help: the stored object is damaged
  and osqueue will not overwrite it (also raised by reads).

One caveat, which no storage client can hide: obstore retries a request that failed
with a 5xx or a dropped connection. If the first attempt landed and only its answer was
lost, the retry is refused because the object has changed, so :class:`WriteConflict` or
:class:`AlreadyExists` may be reporting *our own* earlier attempt. Whoever handles a
conflict re-reads anyway; it must check whether what it reads is its own write (the
state's revision and writer) before it applies the batch again.
"""

from __future__ import annotations

from osqueue_core.errors import OsqueueError
from osqueue_io.storage.version import ObjectVersion


class StorageError(OsqueueError):
    """Base class of every storage failure. Usually transient: retry later."""

    grpc_status = "UNAVAILABLE"
    retryable = True


class WriteConflict(StorageError):
    """A conditional update found the object at another version, or found no object.

    Nothing was written by this request. Re-read the object and apply the change to
    what is there now (see the module docstring for the one case where "what is there
    now" is our own earlier attempt). An update of a key that does not exist raises this
    error on every backend: it is a version mismatch, not a separate case.
    """

    grpc_status = "ABORTED"
    retryable = True

    def __init__(self, key: str, expected: ObjectVersion | None) -> None:
        super().__init__(
            f"conditional write to {key!r} refused: the object is no longer at version "
            f"{expected} (it changed, or does not exist); re-read it and apply the change "
            "to the current version"
        )
        self.key = key
        self.expected = expected


class AlreadyExists(StorageError):
    """``create`` found the key already taken. Nothing was written by this request."""

    grpc_status = "ALREADY_EXISTS"
    retryable = False

    def __init__(self, key: str) -> None:
        super().__init__(
            f"object {key!r} already exists and create writes only absent keys; read it "
            "(an earlier attempt of this same write may have landed) or use another key"
        )
        self.key = key


class ObjectNotFound(StorageError):
    """An object that must exist does not.

    No :class:`ObjectStore` method raises it (``read`` returns ``None``, an update of a
    missing key is a :class:`WriteConflict`); it is for callers that require an object.
    """

    grpc_status = "NOT_FOUND"
    retryable = False

    def __init__(self, key: str) -> None:
        super().__init__(f"object {key!r} does not exist; create it first")
        self.key = key


class OutcomeUnknown(StorageError):
    """A write failed in a way that leaves open whether it landed.

    Timeouts, 5xx answers, connections reset or closed after the request was sent, and
    any failure after obstore already retried. Do not simply resend: re-read the key and
    compare it with what was written.
    """

    grpc_status = "UNKNOWN"
    retryable = False

    def __init__(self, key: str, operation: str, detail: str) -> None:
        super().__init__(
            f"{operation} of {key!r} may or may not have been written ({detail}); "
            f"re-read {key!r} to find out before writing again"
        )
        self.key = key
        self.operation = operation


class WriteNotApplied(StorageError):
    """A write failed and is known not to have landed: safe to retry once the cause is fixed.

    The server refused it (a 4xx such as an authentication or permission error), the
    connection could not be opened, or the request was rejected before it was sent.
    """

    grpc_status = "UNAVAILABLE"
    retryable = True

    def __init__(self, key: str, operation: str, detail: str) -> None:
        super().__init__(
            f"{operation} of {key!r} was not written ({detail}); fix the cause and retry"
        )
        self.key = key
        self.operation = operation


class ReadFailed(StorageError):
    """A read or a listing failed. Reads change nothing, so retrying is always safe."""

    grpc_status = "UNAVAILABLE"
    retryable = True

    def __init__(self, what: str, detail: str) -> None:
        super().__init__(f"reading {what} failed ({detail}); nothing was changed, retry later")
        self.what = what


class CorruptObject(StorageError):
    """The stored object is damaged, or was not written by osqueue: it cannot be read.

    Retrying will not help, and osqueue will not overwrite it, because writing over state
    it could not read would throw away whatever is left of it. A person has to look:
    restore the object from a backup, or move it away. Only backends that frame their
    objects can tell (the local-filesystem backend checks its header and the length);
    damaged bytes on an object store surface when the state fails to parse.
    """

    grpc_status = "DATA_LOSS"
    retryable = False

    def __init__(self, key: str, detail: str) -> None:
        super().__init__(
            f"object {key!r} is damaged ({detail}); osqueue will not overwrite it: "
            "inspect it, then restore it from a backup or move it away"
        )
        self.key = key


class StorageConfigError(StorageError):
    """The store cannot work as configured: a bad URL, missing credentials, a missing
    bucket, or a backend without conditional writes. The message names what to fix."""

    grpc_status = "FAILED_PRECONDITION"
    retryable = False


class InvalidKey(StorageError, ValueError):
    """A key is not portable, or would escape the store's root.

    Keys are ``/``-separated segments: no empty segment, no ``.`` or ``..``, no
    backslash, no control character, no leading ``/``, and no segment starting with
    ``.osq-`` (reserved for the local-filesystem backend's lock and temp files). The
    same rule holds on every backend so that state moves between them unchanged.
    """

    grpc_status = "INVALID_ARGUMENT"
    retryable = False

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"invalid storage key {key!r}: {reason}")
        self.key = key
