"""How osqueue's typed errors cross the wire, in both directions.

Server side: every :class:`~osqueue_core.OsqueueError` becomes a ``GRPCError`` with
``Status[error.grpc_status]`` and the error's message (:func:`to_grpc_error`), and
:func:`add_error_trailers` adds trailing metadata a client can act on:

=================================  ==================================================
``osqueue-error``                  the error's class name, e.g. ``BrokerReplaced``
``osqueue-new-identity-bin``       BrokerReplaced only: the new owner's identity
``osqueue-new-epoch-bin``          BrokerReplaced only: its epoch (decimal digits)
``osqueue-new-address-bin``        BrokerReplaced only: its address, if it published one
=================================  ==================================================

The new owner is also named in the status message, for clients that read only that.
(``-bin`` values are bytes, base64 on the wire, so any identity survives; grpclib's
status ``details`` would need googleapis protos and are not used.)

Client side: :func:`error_from_status` turns a status back into the typed error. The
status code alone decides the family; the ``osqueue-error`` trailer only tells apart
errors sharing a code (the three UNAVAILABLE ones), so a client talking to another
implementation of the protocol still gets sensible errors.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import attrs
from grpclib import GRPCError
from grpclib.const import Status
from grpclib.events import SendTrailingMetadata

from osqueue_core import (
    BrokerNotRunning,
    BrokerReplaced,
    BrokerStopping,
    CorruptState,
    InvalidArgument,
    JobNotFound,
    LeaseLost,
    OsqueueError,
    PayloadTooLarge,
    StateDiverged,
)

ERROR_KEY = "osqueue-error"
NEW_IDENTITY_KEY = "osqueue-new-identity-bin"
NEW_EPOCH_KEY = "osqueue-new-epoch-bin"
NEW_ADDRESS_KEY = "osqueue-new-address-bin"


# -- server side ----------------------------------------------------------------------


def to_grpc_error(error: OsqueueError) -> GRPCError:
    """The status a client sees for ``error``; the error rides along as ``details`` so
    :func:`add_error_trailers` can describe it in trailing metadata."""
    return GRPCError(Status[error.grpc_status], str(error), error)


async def add_error_trailers(event: SendTrailingMetadata) -> None:
    """grpclib ``SendTrailingMetadata`` listener: describe an osqueue error in trailers."""
    error = event.status_details
    if not isinstance(error, OsqueueError):
        return
    event.metadata[ERROR_KEY] = type(error).__name__
    if isinstance(error, BrokerReplaced):
        event.metadata[NEW_IDENTITY_KEY] = error.new_identity.encode()
        event.metadata[NEW_EPOCH_KEY] = str(error.new_epoch).encode()
        if error.new_address:
            event.metadata[NEW_ADDRESS_KEY] = error.new_address.encode()


# -- client side ----------------------------------------------------------------------


@attrs.frozen
class CallContext:
    """What the client asked, so an error can name the job and worker it is about."""

    rpc: str
    job_id: str = ""
    worker_id: str = ""


def _lease_lost(message: str, call: CallContext) -> OsqueueError:
    if call.job_id:
        return LeaseLost(call.job_id, call.worker_id)
    return OsqueueError(message)  # FAILED_PRECONDITION outside a job RPC: not expected


def _job_not_found(message: str, call: CallContext) -> OsqueueError:
    return JobNotFound(call.job_id) if call.job_id else OsqueueError(message)


def _unavailable(message: str, trailers: Mapping[str, object]) -> OsqueueError:
    kind = trailers.get(ERROR_KEY)
    if kind == BrokerReplaced.__name__:
        identity = _text(trailers.get(NEW_IDENTITY_KEY))
        epoch = _text(trailers.get(NEW_EPOCH_KEY))
        if identity is not None and epoch is not None and epoch.isdigit():
            return BrokerReplaced(identity, int(epoch), _text(trailers.get(NEW_ADDRESS_KEY)))
    if kind == BrokerStopping.__name__:
        return BrokerStopping()
    return BrokerNotRunning(message or "the broker is unavailable")


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value if isinstance(value, str) else None


_Factory = Callable[[str, CallContext], OsqueueError]

#: Status name -> typed error, for every status an osqueue broker answers on purpose.
#: UNAVAILABLE is refined by the ``osqueue-error`` trailer (see module docstring).
_BY_STATUS: dict[str, _Factory] = {
    InvalidArgument.grpc_status: lambda message, _: InvalidArgument(message),
    PayloadTooLarge.grpc_status: lambda message, _: PayloadTooLarge(message),
    JobNotFound.grpc_status: _job_not_found,
    LeaseLost.grpc_status: _lease_lost,
    CorruptState.grpc_status: lambda message, _: CorruptState(message),
    StateDiverged.grpc_status: lambda message, _: StateDiverged(message),
    # The broker gave up on the call (its deadline, or it is shutting down a stream):
    # like a timeout, the outcome is unknown and a retry may succeed.
    "DEADLINE_EXCEEDED": lambda message, _: BrokerNotRunning(message or "deadline exceeded"),
    "CANCELLED": lambda message, _: BrokerNotRunning(message or "the call was cancelled"),
}


def error_from_status(
    status: Status,
    message: str | None,
    trailers: Mapping[str, object] | None,
    call: CallContext,
) -> OsqueueError:
    """The typed error for a failed call. Statuses no osqueue broker sends on purpose
    (UNKNOWN, INTERNAL, UNIMPLEMENTED...) become a plain, non-retryable
    :class:`~osqueue_core.OsqueueError` naming the status."""
    text = message or ""
    if status is Status.UNAVAILABLE:
        return _unavailable(text, trailers or {})
    factory = _BY_STATUS.get(status.name)
    if factory is None:
        return OsqueueError(f"{call.rpc} failed with {status.name}: {text or 'no message'}")
    return factory(text, call)
