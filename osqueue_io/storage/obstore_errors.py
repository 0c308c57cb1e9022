"""Translation of obstore's exceptions into the storage layer's typed errors.

The hard part is a failed write: did it land? The rule is conservative, because calling
a landed write "not applied" makes the caller apply it twice, while calling an unapplied
write "unknown" only costs the caller one re-read. So a write is :class:`WriteNotApplied`
only when obstore's report proves it: the server answered a 4xx (it refused the request)
or the TCP connection never opened, *and* obstore did not retry first (an earlier attempt
may have reached the server; obstore reports only the last one). Everything else that is
not a precondition failure is :class:`OutcomeUnknown`: 5xx answers, timeouts, connections
reset or closed mid-request, and anything unrecognised.

obstore raises a handful of exception classes and puts the rest of what it knows (HTTP
status, transport error kind, retry count) in the message, as its Rust error's debug
output. Those fields are parsed here; if a future obstore changes the text, the parse
falls back to the safe answer, :class:`OutcomeUnknown`.
"""

from __future__ import annotations

import re
from typing import Literal

from obstore import exceptions as obstore_exceptions

from osqueue_io.storage.errors import (
    AlreadyExists,
    InvalidKey,
    OutcomeUnknown,
    ReadFailed,
    StorageConfigError,
    StorageError,
    WriteConflict,
    WriteNotApplied,
)
from osqueue_io.storage.version import ObjectVersion

WriteOperation = Literal["create", "update", "delete"]

_RETRIES = re.compile(r"\bretries: (\d+),")
_HTTP_KIND = re.compile(r"HttpError \{\s*kind: (\w+),")
_STATUS = re.compile(r"status code: (\d{3})")
# Error codes S3, Azure and GCS put in the body of a 404 for a missing bucket/container.
_MISSING_BUCKET_MARKERS = (
    "NoSuchBucket",
    "ContainerNotFound",
    "The specified bucket does not exist",
)
# obstore refuses, before sending anything, an update whose version lacks the part the
# backend needs (GCS: "Version required", S3/Azure: "ETag required").
_MISSING_TOKEN_MARKERS = ("required for conditional", "MissingVersion", "MissingETag")


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def missing_bucket(error: BaseException, store_url: str) -> StorageConfigError | None:
    """Return a config error if ``error`` says the bucket or container does not exist.

    S3 and Azure answer 404 for a missing bucket exactly as for a missing key; without
    this check a read would report "no state yet" and a create would look transient.
    """
    text = str(error)
    if any(marker in text for marker in _MISSING_BUCKET_MARKERS):
        return StorageConfigError(
            f"the bucket or container of {store_url} does not exist: create it, or fix the "
            f"URL ({_first_line(error)})"
        )
    return None


def _config_error(error: BaseException, store_url: str) -> StorageConfigError | None:
    if isinstance(error, NotImplementedError | obstore_exceptions.NotSupportedError):
        return StorageConfigError(
            f"{store_url} does not support conditional writes ({_first_line(error)}); "
            "osqueue needs them: for a local directory use a file:// URL (osqueue's own "
            "backend), for S3-compatible servers check that they honour If-Match"
        )
    if isinstance(error, obstore_exceptions.UnknownConfigurationKeyError):
        return StorageConfigError(f"bad option for {store_url}: {_first_line(error)}")
    return missing_bucket(error, store_url)


def _proven_not_sent(error: BaseException) -> bool:
    """True when obstore's report proves that no attempt of the write reached the server."""
    text = str(error)
    retries = _RETRIES.search(text)
    if retries is None or int(retries.group(1)) != 0:
        return False
    status = _STATUS.search(text)
    if status is not None:
        return 400 <= int(status.group(1)) < 500
    kind = _HTTP_KIND.search(text)
    return kind is not None and kind.group(1) == "Connect"


def _describe(error: BaseException) -> str:
    if isinstance(
        error, obstore_exceptions.PermissionDeniedError | obstore_exceptions.UnauthenticatedError
    ):
        return f"check the credentials and their permissions: {_first_line(error)}"
    return _first_line(error)


def write_error(
    error: Exception,
    *,
    key: str,
    operation: WriteOperation,
    expected: ObjectVersion | None,
    store_url: str,
) -> StorageError:
    """Classify an exception raised by ``obstore.put_async`` for a create or an update
    (or by ``obstore.delete_async``: a delete is a write with no precondition).

    ``key`` is the caller's key (without the store's prefix), used in the messages.
    """
    config_error = _config_error(error, store_url)
    if config_error is not None:
        return config_error
    if isinstance(error, ValueError):
        # obstore raises a bare ValueError only when it cannot parse the path.
        return InvalidKey(key, _first_line(error))
    if isinstance(
        error,
        obstore_exceptions.AlreadyExistsError
        | obstore_exceptions.PreconditionError
        | obstore_exceptions.NotModifiedError,
    ):
        return AlreadyExists(key) if operation == "create" else WriteConflict(key, expected)
    if operation == "update" and isinstance(
        error, FileNotFoundError | obstore_exceptions.NotFoundError
    ):
        # Azure answers 404 for an update of a missing blob; S3 and memory answer 412.
        # Both are the same case: no version to match.
        return WriteConflict(key, expected)
    if any(marker in str(error) for marker in _MISSING_TOKEN_MARKERS):
        return WriteNotApplied(
            key,
            operation,
            f"the expected version ({expected}) lacks what this backend compares; pass "
            "the version returned by this store's read/create/update",
        )
    if _proven_not_sent(error):
        return WriteNotApplied(key, operation, _describe(error))
    return OutcomeUnknown(key, operation, _describe(error))


def read_error(error: Exception, *, what: str, store_url: str) -> StorageError:
    """Classify an exception raised by a get or a list (a missing key is not an error)."""
    config_error = _config_error(error, store_url)
    if config_error is not None:
        return config_error
    if isinstance(error, ValueError):
        return InvalidKey(what, _first_line(error))
    return ReadFailed(what, _describe(error))
