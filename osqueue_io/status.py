"""How osqueue's typed errors cross the wire, in both directions.

Server side: every :class:`~osqueue_core.OsqueueError` becomes a ``GRPCError`` with
``Status[error.grpc_status]`` and the error's message (:func:`to_grpc_error`), and
:func:`add_error_trailers` adds trailing metadata a client can act on:

==================================  =================================================
``osqueue-error``                   the error's class name, e.g. ``BrokerReplaced``
``osqueue-new-identity-bin``        BrokerReplaced and NotOwner: the owner's identity
``osqueue-new-epoch-bin``           BrokerReplaced and NotOwner: its epoch (decimal digits)
``osqueue-new-address-bin``         BrokerReplaced and NotOwner: its address, if published
``osqueue-schema-found-bin``        UnsupportedSchema only: the stored schema version
``osqueue-schema-supported-bin``    UnsupportedSchema only: the newest this broker reads
``osqueue-job-id-bin``              errors about one job (JobNotFound, LeaseLost,
                                    JobAlreadyFinished, JobCancelled): its id
``osqueue-job-status-bin``          JobAlreadyFinished only: the job's status
==================================  =================================================

Every status message and trailer value the broker sends is bounded
(:data:`MAX_STATUS_MESSAGE_BYTES`, :data:`MAX_TRAILER_VALUE_BYTES`), whatever the error
quotes: HTTP/2 header compression (hpack's pure-Python Huffman coder) costs time
quadratic in a header value's length, so one request echoing a multi-megabyte id back
in its status would freeze the broker, and grpcio clients refuse headers over 16 KiB
anyway. (``-bin`` values are bytes, base64 on the wire, so any identity survives;
grpclib's status ``details`` would need googleapis protos and are not used.)

Client side: :func:`error_from_status` turns a status back into the typed error. The
``osqueue-error`` trailer decides when it names an error of :data:`WIRE_ERRORS`; the
status code alone decides only when the trailer is missing or unknown (another
implementation of the protocol, a proxy that drops trailers).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import attrs
from grpclib import GRPCError
from grpclib.const import Status
from grpclib.events import SendTrailingMetadata
from grpclib.metadata import encode_grpc_message

from osqueue_core import (
    BrokerNotRunning,
    BrokerReplaced,
    BrokerStopping,
    CallInterrupted,
    CorruptState,
    InvalidArgument,
    JobAlreadyFinished,
    JobCancelled,
    JobNotDead,
    JobNotFound,
    LeaseLost,
    NotOwner,
    OsqueueError,
    Overloaded,
    PayloadTooLarge,
    PermissionDenied,
    SegmentMissing,
    StateDiverged,
    StateMissing,
    StorageUnavailable,
    Unauthenticated,
    UnsupportedSchema,
)

ERROR_KEY = "osqueue-error"
NEW_IDENTITY_KEY = "osqueue-new-identity-bin"
NEW_EPOCH_KEY = "osqueue-new-epoch-bin"
NEW_ADDRESS_KEY = "osqueue-new-address-bin"
SCHEMA_FOUND_KEY = "osqueue-schema-found-bin"
SCHEMA_SUPPORTED_KEY = "osqueue-schema-supported-bin"
JOB_ID_KEY = "osqueue-job-id-bin"
JOB_STATUS_KEY = "osqueue-job-status-bin"
SEGMENT_KEY = "osqueue-segment-key-bin"

#: The longest status message the broker sends, in bytes as encoded on the wire
#: (``grpc-message`` is percent-encoded UTF-8).
MAX_STATUS_MESSAGE_BYTES = 1024
#: The longest value of a trailer the broker adds, in bytes before base64.
MAX_TRAILER_VALUE_BYTES = 1024

_Trailers = Mapping[str, object]


# -- bounds ---------------------------------------------------------------------------


def clip_status_message(text: str, limit: int = MAX_STATUS_MESSAGE_BYTES) -> str:
    """``text``, cut so that its ``grpc-message`` encoding is at most ``limit`` bytes;
    a cut text ends with how long the whole was."""
    # Every character encodes to at least one byte, so nothing past `limit` characters
    # can fit: slicing first keeps the work bounded whatever the length of `text`.
    head = text[:limit]
    if len(head) == len(text) and len(encode_grpc_message(head)) <= limit:
        return _well_formed(text)
    marker = f"… ({len(text)} characters)"
    budget = limit - len(encode_grpc_message(marker))
    end = used = 0
    for character in head:
        used += len(encode_grpc_message(_well_formed(character)))
        if used > budget:
            break
        end += 1
    return _well_formed(head[:end]) + marker


def _well_formed(text: str) -> str:
    # A lone surrogate cannot be encoded as UTF-8 (grpclib would fail to send it).
    return text.encode("utf-8", "replace").decode("utf-8")


def clip_trailer_value(value: bytes, limit: int = MAX_TRAILER_VALUE_BYTES) -> bytes:
    """``value`` cut to ``limit`` bytes (trailer values come from the state object, which
    another broker wrote: bounded there too, but never trusted here)."""
    return value[:limit]


# -- server side ----------------------------------------------------------------------


def to_grpc_error(error: OsqueueError) -> GRPCError:
    """The status a client sees for ``error``, with a bounded message; the error rides
    along as ``details`` so :func:`add_error_trailers` can describe it in trailers."""
    return GRPCError(Status[error.grpc_status], clip_status_message(str(error)), error)


async def add_error_trailers(event: SendTrailingMetadata) -> None:
    """grpclib ``SendTrailingMetadata`` listener: describe an osqueue error in trailers."""
    error = event.status_details
    if not isinstance(error, OsqueueError):
        return
    name, fields = describe_error(error)
    event.metadata[ERROR_KEY] = name
    for key, value in fields.items():
        event.metadata[key] = value


def describe_error(error: OsqueueError) -> tuple[str, dict[str, bytes]]:
    """The ``osqueue-error`` name of ``error`` and its other trailers (clipped): what a
    call that failed with it says, and what an item of a batch call that did says."""
    name = wire_name(type(error))
    wire = WIRE_ERRORS.get(name)
    fields = wire.fields(error) if wire is not None else {}
    return name, {key: clip_trailer_value(value) for key, value in fields.items()}


def wire_name(error_type: type[OsqueueError]) -> str:
    """The ``osqueue-error`` name of ``error_type``: the nearest class in its ancestry
    that clients know (a subclass is reported as what it specialises)."""
    for cls in error_type.__mro__:
        if cls.__name__ in WIRE_ERRORS:
            return cls.__name__
    return error_type.__name__


# -- client side ----------------------------------------------------------------------


@attrs.frozen
class CallContext:
    """What the client asked, so an error can name the job and worker it is about."""

    rpc: str
    job_id: str = ""
    worker_id: str = ""


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value if isinstance(value, str) else None


def _number(value: object) -> int | None:
    text = _text(value)
    return int(text) if text is not None and text.isascii() and text.isdigit() else None


# Each decoder rebuilds an error from the status message, the call and the trailers;
# None when what it needs is missing (then the status code decides).
_Decoder = Callable[[str, CallContext, _Trailers], OsqueueError | None]


@attrs.frozen
class WireError:
    """How one error class crosses the wire: its extra trailers, and its rebuilding."""

    #: The extra trailers describing an instance (its fields), unclipped.
    fields: Callable[[OsqueueError], dict[str, bytes]]
    decode: _Decoder


def _no_fields(error: OsqueueError) -> dict[str, bytes]:
    return {}


def _message_only(cls: Callable[[str], OsqueueError]) -> WireError:
    return WireError(_no_fields, lambda message, call, trailers: cls(message))


def _replaced_fields(error: OsqueueError) -> dict[str, bytes]:
    assert isinstance(error, BrokerReplaced)
    fields = {
        NEW_IDENTITY_KEY: error.new_identity.encode(),
        NEW_EPOCH_KEY: str(error.new_epoch).encode(),
    }
    if error.new_address:
        fields[NEW_ADDRESS_KEY] = error.new_address.encode()
    return fields


def _replaced_by(cls: type[BrokerReplaced]) -> WireError:
    def parse(message: str, call: CallContext, trailers: _Trailers) -> OsqueueError | None:
        identity = _text(trailers.get(NEW_IDENTITY_KEY))
        epoch = _number(trailers.get(NEW_EPOCH_KEY))
        if identity is None or epoch is None:
            return None
        return cls(identity, epoch, _text(trailers.get(NEW_ADDRESS_KEY)))

    return WireError(_replaced_fields, parse)


def _schema_fields(error: OsqueueError) -> dict[str, bytes]:
    assert isinstance(error, UnsupportedSchema)
    return {
        SCHEMA_FOUND_KEY: str(error.found).encode(),
        SCHEMA_SUPPORTED_KEY: str(error.supported).encode(),
    }


def _schema(message: str, call: CallContext, trailers: _Trailers) -> OsqueueError | None:
    found = _number(trailers.get(SCHEMA_FOUND_KEY))
    supported = _number(trailers.get(SCHEMA_SUPPORTED_KEY))
    if found is None or supported is None:
        return None
    return UnsupportedSchema(found, supported)


def _job_id_fields(error: OsqueueError) -> dict[str, bytes]:
    job_id = getattr(error, "job_id", None)
    return {JOB_ID_KEY: job_id.encode()} if isinstance(job_id, str) else {}


def _segment_fields(error: OsqueueError) -> dict[str, bytes]:
    assert isinstance(error, SegmentMissing)
    return {SEGMENT_KEY: error.key.encode()}


def _segment_missing(message: str, call: CallContext, trailers: _Trailers) -> OsqueueError | None:
    key = _text(trailers.get(SEGMENT_KEY))
    return SegmentMissing(key) if key else None


def _job_id(call: CallContext, trailers: _Trailers) -> str:
    """The job an error is about: the one the call named, else the broker's trailer
    (a Redrive names several jobs, a ListDead's ``after`` is not ``job_id``)."""
    return call.job_id or _text(trailers.get(JOB_ID_KEY)) or ""


def _job_not_found(message: str, call: CallContext, trailers: _Trailers) -> OsqueueError | None:
    job_id = _job_id(call, trailers)
    return JobNotFound(job_id) if job_id else None


def _lease_lost(message: str, call: CallContext, trailers: _Trailers) -> OsqueueError | None:
    job_id = _job_id(call, trailers)
    return LeaseLost(job_id, call.worker_id) if job_id else None


def _finished_fields(error: OsqueueError) -> dict[str, bytes]:
    assert isinstance(error, JobAlreadyFinished)
    return {**_job_id_fields(error), JOB_STATUS_KEY: error.status.encode()}


def _already_finished(message: str, call: CallContext, trailers: _Trailers) -> OsqueueError | None:
    job_id = _job_id(call, trailers)
    status = _text(trailers.get(JOB_STATUS_KEY))
    return JobAlreadyFinished(job_id, status) if job_id and status else None


def _job_cancelled(message: str, call: CallContext, trailers: _Trailers) -> OsqueueError | None:
    job_id = _job_id(call, trailers)
    return JobCancelled(job_id) if job_id else None


#: ``osqueue-error`` name -> how that error crosses the wire: every error an osqueue
#: broker answers with on purpose.
WIRE_ERRORS: dict[str, WireError] = {
    **{
        cls.__name__: _message_only(cls)
        for cls in (
            InvalidArgument,
            PayloadTooLarge,
            BrokerNotRunning,
            CorruptState,
            StateDiverged,
            Overloaded,
            StorageUnavailable,
            StateMissing,
            CallInterrupted,
            JobNotDead,
            Unauthenticated,
            PermissionDenied,
        )
    },
    JobNotFound.__name__: WireError(_job_id_fields, _job_not_found),
    LeaseLost.__name__: WireError(_job_id_fields, _lease_lost),
    JobAlreadyFinished.__name__: WireError(_finished_fields, _already_finished),
    JobCancelled.__name__: WireError(_job_id_fields, _job_cancelled),
    BrokerReplaced.__name__: _replaced_by(BrokerReplaced),
    NotOwner.__name__: _replaced_by(NotOwner),
    BrokerStopping.__name__: WireError(_no_fields, lambda *_: BrokerStopping()),
    UnsupportedSchema.__name__: WireError(_schema_fields, _schema),
    SegmentMissing.__name__: WireError(_segment_fields, _segment_missing),
}

#: Status name -> typed error, for a status without a known ``osqueue-error`` trailer.
_BY_STATUS: dict[str, _Decoder] = {
    "INVALID_ARGUMENT": lambda message, call, _: InvalidArgument(message),
    # What gRPC servers most often mean by it: a message over their size limit. Retrying
    # that would never help, so it is not read as the retryable Overloaded.
    "RESOURCE_EXHAUSTED": lambda message, call, _: PayloadTooLarge(message),
    # Without the trailer naming the error, only the call says which job it is about:
    # FAILED_PRECONDITION means a lost lease only for a call about one job.
    "NOT_FOUND": lambda message, call, _: _job_not_found(message, call, {}),
    "FAILED_PRECONDITION": lambda message, call, _: _lease_lost(message, call, {}),
    "UNAVAILABLE": lambda message, call, _: BrokerNotRunning(
        message or "the broker is unavailable"
    ),
    "DATA_LOSS": lambda message, call, _: CorruptState(message),
    "ABORTED": lambda message, call, _: StateDiverged(message),
    "UNAUTHENTICATED": lambda message, call, _: Unauthenticated(
        message or "the broker requires a valid bearer token"
    ),
    "PERMISSION_DENIED": lambda message, call, _: PermissionDenied(
        message or "the call's token does not allow it"
    ),
    # The server gave up on the call (its deadline passed, or it cancelled the stream):
    # the outcome is unknown and a retry may succeed.
    "DEADLINE_EXCEEDED": lambda message, call, _: CallInterrupted(
        message or "the call's deadline passed at the broker; it may or may not have taken effect"
    ),
    "CANCELLED": lambda message, call, _: CallInterrupted(
        message or "the broker cancelled the call; it may or may not have taken effect"
    ),
}


def error_from_item(
    code: int,
    message: str,
    name: str,
    details: Mapping[str, bytes],
    call: CallContext,
) -> OsqueueError | None:
    """The typed error of one item of a batch call (an ``ItemStatus``), read as the
    status and trailers of a call of its own; None when the item succeeded."""
    if code == Status.OK.value:
        return None
    try:
        status = Status(code)
    except ValueError:
        status = Status.UNKNOWN
    return error_from_status(status, message, {**details, ERROR_KEY: name}, call)


def error_from_status(
    status: Status,
    message: str | None,
    trailers: _Trailers | None,
    call: CallContext,
) -> OsqueueError:
    """The typed error for a failed call: the one the ``osqueue-error`` trailer names,
    else the one the status code implies. Statuses no osqueue broker sends on purpose
    (UNKNOWN, INTERNAL, UNIMPLEMENTED...) become a plain, non-retryable
    :class:`~osqueue_core.OsqueueError` naming the status."""
    text = message or ""
    trailers = trailers or {}
    wire = WIRE_ERRORS.get(_text(trailers.get(ERROR_KEY)) or "")
    error = wire.decode(text, call, trailers) if wire is not None else None
    if error is None:
        by_status = _BY_STATUS.get(status.name)
        error = by_status(text, call, trailers) if by_status is not None else None
    if error is None:
        return OsqueueError(f"{call.rpc} failed with {status.name}: {text or 'no message'}")
    return error
