"""Reading each request within bounds, instead of grpclib buffering it whole first.

grpclib reads a request message in one go: the 5-byte gRPC prefix (a compression flag
and the message length), then every byte the prefix declares, and only then hands the
bytes to the codec. A size check in the codec comes too late: eight clients declaring
60 MB each made the broker hold half a gigabyte before refusing them.

:class:`BoundedService` wraps every handler of a service so that its request is read by
:func:`read_request` instead: it reads the prefix, refuses a declared length over
``max_message_bytes`` (``PayloadTooLarge``) or over what the broker's in-flight budget
has left (``Overloaded``, see :class:`~osqueue_io.server.admission.Admission`), and only
then reads the body. Both are RESOURCE_EXHAUSTED, told apart by the ``osqueue-error``
trailer.

A check on the prefix really bounds memory because of HTTP/2 flow control: grpclib
acknowledges received data (WINDOW_UPDATE) only as it is read, so a client gets at most
one stream window of unread bytes into the broker per call (and one connection window
per connection, 4 MiB each by default). A refused call's stream is reset and whatever
still arrives for it is dropped.

grpclib internals relied on (grpclib 0.4.x; pyproject pins <0.5): a server
``Stream``'s ``_stream`` attribute is the call's HTTP/2 stream, whose
``recv_data(n)`` returns exactly ``n`` bytes (``b""`` at the end of the stream, an
``AssertionError`` when the stream ends short) and acknowledges only what it consumed.
That is what ``grpclib.stream.recv_message`` itself uses.
``tests/io/distributed/test_hostile_requests.py`` (a declared length refused before its
body is sent) fails if that changes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any, Protocol, TypeVar

import h2.exceptions
from grpclib import GRPCError
from grpclib.const import Handler, Status
from grpclib.server import Stream

from osqueue_core import InvalidArgument, OsqueueError, PayloadTooLarge
from osqueue_io.security.access import Access
from osqueue_io.server.admission import Admission
from osqueue_io.server.codec import StrictProtoCodec
from osqueue_io.status import ERROR_KEY, describe_error, to_grpc_error

T = TypeVar("T")

#: A gRPC message prefix: a compression flag byte and a 4-byte big-endian length.
PREFIX_BYTES = 5


async def read_request(
    stream: Stream[Any, Any],
    request_type: type[T],
    codec: StrictProtoCodec,
    admission: Admission,
) -> T:
    """The one request message of a unary call on ``stream``, read within the limits
    (see the module docstring); every refusal is a ``GRPCError`` with a typed error."""
    name = request_type.__name__
    h2_stream = stream._stream  # the grpclib internal this module relies on
    try:
        prefix = await h2_stream.recv_data(PREFIX_BYTES)
    except AssertionError:  # how grpclib reports a stream that ended short
        raise to_grpc_error(InvalidArgument(f"the {name} ended inside its length prefix")) from None
    if not prefix:
        raise to_grpc_error(InvalidArgument(f"the call carried no {name}"))
    if prefix[0]:
        # The broker offers no grpc-encoding, so a client has no business compressing:
        # the status gRPC prescribes for a compression the server does not support.
        raise GRPCError(Status.UNIMPLEMENTED, "compressed messages are not supported")
    length = int.from_bytes(prefix[1:], "big")
    if length > codec.max_message_bytes:
        raise to_grpc_error(
            PayloadTooLarge(
                f"a {name} of {length} bytes is over the broker's limit of "
                f"{codec.max_message_bytes} bytes: split the batch, or store large data "
                "elsewhere and push a reference"
            )
        )
    try:
        admission.reserve_request_bytes(length)
    except OsqueueError as error:
        raise to_grpc_error(error) from None
    try:
        body = await h2_stream.recv_data(length)
    except AssertionError:
        raise to_grpc_error(
            InvalidArgument(f"the {name} ended before the {length} bytes its prefix declared")
        ) from None
    message: T = codec.decode(body, request_type)
    return message


async def send_error(stream: Stream[Any, Any], error: GRPCError, cause: OsqueueError) -> None:
    """End the call with ``error``'s status and trailers describing ``cause`` (see
    :mod:`osqueue_io.status`): what grpclib would send for ``error``, plus the trailers.
    (Sent here, rather than by a grpclib trailer listener, so that a successful call
    costs no listener event.)"""
    name, fields = describe_error(cause)
    trailers: dict[str, str | bytes] = {ERROR_KEY: name, **fields}
    with contextlib.suppress(h2.exceptions.StreamClosedError):
        await stream.send_trailing_metadata(
            status=error.status, status_message=error.message, metadata=trailers
        )


class _ReadAhead:
    """A server stream whose request message was already read: what a generated
    handler needs of a unary call (``recv_message`` and ``send_message``)."""

    def __init__(self, stream: Stream[Any, Any], message: object) -> None:
        self._stream = stream
        self._message: object | None = message

    async def recv_message(self) -> object | None:
        message, self._message = self._message, None
        return message

    async def send_message(self, message: object) -> None:
        await self._stream.send_message(message)


class Servable(Protocol):
    """What grpclib serves: a mapping of method paths to handlers (generated services)."""

    def __mapping__(self) -> Mapping[str, Handler]: ...


class BoundedService:
    """``service`` with every request read by :func:`read_request`; give it to
    ``grpclib.server.Server`` in place of ``service``. Only unary-request methods are
    supported (all of osqueue's are).

    With ``access``, each call's token is checked first, before it is admitted or its
    request read, and a worker-bound token's worker ids once the request is read
    (:class:`~osqueue_io.security.access.Access`): a refused call never reaches
    ``service``."""

    def __init__(
        self,
        service: Servable,
        codec: StrictProtoCodec,
        admission: Admission,
        access: Access | None = None,
    ) -> None:
        self._service = service
        self._codec = codec
        self._admission = admission
        self._access = access if access is not None and access.enabled else None

    def __mapping__(self) -> Mapping[str, Handler]:
        mapping = self._service.__mapping__()
        return {name: self._bounded(name, handler) for name, handler in mapping.items()}

    def _bounded(self, name: str, handler: Handler) -> Handler:
        if handler.cardinality.client_streaming:
            raise TypeError(f"{name}: BoundedService reads unary requests only")

        access = self._access

        async def read_then_handle(stream: Stream[Any, Any]) -> None:
            try:
                token = None
                if access is not None:
                    token = access.authorize(name, stream.metadata, stream.peer)
                self._admission.admit(stream.deadline)
                message = await read_request(
                    stream, handler.request_type, self._codec, self._admission
                )
                if access is not None:
                    access.check_workers(token, name, message)
                await handler.func(_ReadAhead(stream, message))
            except OsqueueError as error:  # refused by access
                await send_error(stream, to_grpc_error(error), error)
            except GRPCError as error:
                if not isinstance(error.details, OsqueueError):
                    raise
                await send_error(stream, error, error.details)

        return Handler(
            read_then_handle, handler.cardinality, handler.request_type, handler.reply_type
        )
