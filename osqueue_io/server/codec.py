"""A strict protobuf codec for the broker: malformed requests become INVALID_ARGUMENT.

betterproto2 decodes leniently: truncated fields, wrong wire types and invalid UTF-8
come out as odd values or as exceptions that grpclib would report as "Internal Server
Error". The broker must answer every bad request with a clear status and carry on, so
the codec checks the wire format of every request before betterproto2 parses it:

* every field is well formed (varints end, lengths stay inside the message);
* a known field has the wire type its declaration implies, strings are UTF-8, and
  integers fit their declared width (a ``sint32`` its zigzag range);
* a field of a nested message type (``PushBatchRequest.items``) is checked the same
  way, as the message it holds;
* unknown fields are skipped, as protobuf requires (a newer client may send them);
* a message longer than ``max_message_bytes`` is refused with RESOURCE_EXHAUSTED
  (``PayloadTooLarge``) before it is parsed. (The broker's request reader refuses it
  earlier still, from its length prefix: :mod:`osqueue_io.server.reader`.)

Only the field types osqueue's requests use are supported (the scalars below, repeated
strings and bytes, nested messages, proto3 ``optional``); a request message with any
other field type (a repeated number, which could arrive packed, say) is a programming
error, reported the first time it is seen.
"""

from __future__ import annotations

import dataclasses
from functools import cache
from typing import Any

import betterproto2
from grpclib.encoding.proto import ProtoCodec

from osqueue_core import (
    MAX_KEY_LENGTH,
    MAX_QUEUE_NAME_LENGTH,
    MAX_QUEUES_PER_CLAIM,
    BrokerConfig,
    InvalidArgument,
    PayloadTooLarge,
)
from osqueue_io.status import to_grpc_error

#: Wire type of each supported field type (0 varint, 2 length-delimited).
_WIRE_TYPES = {
    betterproto2.TYPE_STRING: 2,
    betterproto2.TYPE_BYTES: 2,
    betterproto2.TYPE_MESSAGE: 2,
    betterproto2.TYPE_BOOL: 0,
    betterproto2.TYPE_UINT32: 0,
    betterproto2.TYPE_UINT64: 0,
    betterproto2.TYPE_SINT32: 0,
}
#: Largest varint of each integer type: a zigzag-encoded ``sint32`` uses 32 bits too.
_MAXIMUM = {
    betterproto2.TYPE_BOOL: 1,
    betterproto2.TYPE_UINT32: 2**32 - 1,
    betterproto2.TYPE_UINT64: 2**64 - 1,
    betterproto2.TYPE_SINT32: 2**32 - 1,
}
#: Nested messages deeper than this are refused (osqueue's requests nest one level).
MAX_NESTING = 8

#: Room in a request besides its payloads: ids and error texts (a few KiB at their
#: limits) and unknown fields a newer client may add.
REQUEST_SLACK_BYTES = 64 * 1024
#: Protobuf framing of one payload at most: a one-byte tag and a length varint.
_TAG_AND_LENGTH = 1 + 10
#: A ``PushItem`` around each payload of a batch, at most: the item's own tag and
#: length, the payload's, a queue name (64 ASCII characters), a priority, a delay and a
#: run-at, a key (256 characters of up to 4 UTF-8 bytes each) and an attempt limit.
PUSH_ITEM_FRAMING_BYTES = (
    _TAG_AND_LENGTH  # the item
    + _TAG_AND_LENGTH  # its payload's tag and length
    + _TAG_AND_LENGTH
    + MAX_QUEUE_NAME_LENGTH
    + (1 + 5)  # priority: a sint32 varint
    + 2 * _TAG_AND_LENGTH  # delay_ms, run_at_ms: uint64 varints
    + _TAG_AND_LENGTH
    + 4 * MAX_KEY_LENGTH
    + (1 + 5)  # max_attempts: a uint32 varint
)


def default_max_message_bytes(config: BrokerConfig) -> int:
    """The largest request a broker with ``config`` can accept: a PushBatch at the
    batch limits, each job with every option at its limit (or one Push at the payload
    limit), plus slack. Anything larger is refused before it is read."""
    payload_bytes = max(config.max_batch_bytes, config.max_payload_bytes)
    framing = config.max_batch_ops * PUSH_ITEM_FRAMING_BYTES
    return payload_bytes + framing + REQUEST_SLACK_BYTES


#: Most entries a repeated request field may carry: the largest batch (PushBatch items,
#: Redrive and Purge ids) or list of a claim's queues the core accepts. Beyond it the
#: request is refused while it is being checked, before it is parsed.
DEFAULT_MAX_REPEATED = max(BrokerConfig().max_batch_ops, MAX_QUEUES_PER_CLAIM)


class MalformedMessage(ValueError):
    """The bytes are not a valid encoding of the expected message."""


class TooManyEntries(MalformedMessage):
    """A repeated field has more entries than the broker accepts (like a batch over
    ``max_batch_ops``: refused as too large, not as malformed)."""


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = 0
    for shift in range(0, 70, 7):
        if pos >= len(data):
            raise MalformedMessage("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
    raise MalformedMessage("varint longer than 10 bytes")


@cache
def _fields(
    message_type: type[betterproto2.Message],
) -> dict[int, tuple[str, type[betterproto2.Message] | None, bool]]:
    """Field number -> (proto type, message class of a message field, repeated) of
    ``message_type``, checked once per type."""
    fields: dict[int, tuple[str, type[betterproto2.Message] | None, bool]] = {}
    for field in dataclasses.fields(message_type):  # type: ignore[arg-type]
        meta = betterproto2.FieldMetadata.get(field)
        supported = meta.proto_type in _WIRE_TYPES and meta.map_meta is None
        if meta.repeated and _WIRE_TYPES.get(meta.proto_type) != 2:
            supported = False  # a repeated number may come packed: not handled here
        if not supported:
            raise TypeError(
                f"{message_type.__name__}.{field.name}: the strict codec does not support "
                f"{'repeated ' if meta.repeated else ''}{meta.proto_type} fields; extend "
                "osqueue_io/server/codec.py"
            )
        nested: type[betterproto2.Message] | None = None
        if meta.proto_type == betterproto2.TYPE_MESSAGE:
            found = message_type._cls_for(field)
            if not (isinstance(found, type) and issubclass(found, betterproto2.Message)):
                raise TypeError(f"{message_type.__name__}.{field.name}: not a message type")
            nested = found
            _fields(nested)  # its fields are checked now too
        fields[meta.number] = (meta.proto_type, nested, bool(meta.repeated))
    return fields


def check_wire_format(
    data: bytes,
    message_type: type[betterproto2.Message],
    depth: int = 0,
    max_repeated: int = DEFAULT_MAX_REPEATED,
) -> None:
    """Raise :class:`MalformedMessage` unless ``data`` is a valid ``message_type`` with
    at most ``max_repeated`` entries in each repeated field (counted as they are read,
    so a request of millions of tiny entries costs no more than its first few)."""
    if depth > MAX_NESTING:
        raise MalformedMessage(f"messages nested more than {MAX_NESTING} deep")
    fields = _fields(message_type)
    counts: dict[int, int] = {}
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire_type = key >> 3, key & 7
        if number == 0:
            raise MalformedMessage("field number 0")
        value: int | bytes
        if wire_type == 0:
            value, pos = _varint(data, pos)
        elif wire_type == 2:
            length, pos = _varint(data, pos)
            if pos + length > len(data):
                raise MalformedMessage(f"field {number}: length {length} runs past the end")
            value, pos = data[pos : pos + length], pos + length
        elif wire_type in (1, 5):
            size = 8 if wire_type == 1 else 4
            if pos + size > len(data):
                raise MalformedMessage(f"field {number}: truncated fixed{size * 8}")
            value, pos = data[pos : pos + size], pos + size
        else:
            raise MalformedMessage(f"field {number}: unsupported wire type {wire_type}")
        known = fields.get(number)
        if known is None:
            continue  # an unknown field (a newer client): skipped, as protobuf does
        proto_type, nested, repeated = known
        if repeated:
            counts[number] = count = counts.get(number, 0) + 1
            if count > max_repeated:
                raise TooManyEntries(
                    f"field {number} has more than {max_repeated} entries (the broker's "
                    "limit): split the request"
                )
        if _WIRE_TYPES[proto_type] != wire_type:
            raise MalformedMessage(f"field {number}: wire type {wire_type} for a {proto_type}")
        if proto_type == betterproto2.TYPE_STRING:
            assert isinstance(value, bytes)
            try:
                value.decode("utf-8")
            except UnicodeDecodeError:
                raise MalformedMessage(f"field {number}: string is not UTF-8") from None
        if nested is not None:
            assert isinstance(value, bytes)
            try:
                check_wire_format(value, nested, depth + 1, max_repeated)
            except MalformedMessage as error:
                raise MalformedMessage(f"field {number}: {error}") from None
        maximum = _MAXIMUM.get(proto_type)
        if maximum is not None and isinstance(value, int) and value > maximum:
            raise MalformedMessage(f"field {number}: {value} is out of range for a {proto_type}")


class StrictProtoCodec(ProtoCodec):
    """grpclib's protobuf codec, refusing what :func:`check_wire_format` refuses."""

    def __init__(
        self, max_message_bytes: int | None = None, max_repeated: int | None = None
    ) -> None:
        config = BrokerConfig()
        if max_message_bytes is None:
            max_message_bytes = default_max_message_bytes(config)
        if max_repeated is None:
            max_repeated = max(config.max_batch_ops, MAX_QUEUES_PER_CLAIM)
        if max_message_bytes < 1 or max_repeated < 1:
            raise ValueError("max_message_bytes and max_repeated must be positive")
        self.max_message_bytes = max_message_bytes
        self.max_repeated = max_repeated

    def decode(self, data: bytes, message_type: Any) -> Any:
        name = getattr(message_type, "__name__", "message")
        if len(data) > self.max_message_bytes:
            raise to_grpc_error(
                PayloadTooLarge(
                    f"{name} of {len(data)} bytes exceeds the broker's limit of "
                    f"{self.max_message_bytes} bytes"
                )
            )
        try:
            check_wire_format(data, message_type, max_repeated=self.max_repeated)
        except TooManyEntries as error:
            raise to_grpc_error(PayloadTooLarge(f"{name}: {error}")) from None
        except MalformedMessage as error:
            raise to_grpc_error(InvalidArgument(f"malformed {name}: {error}")) from None
        try:
            return super().decode(data, message_type)
        except Exception as error:  # betterproto2 objecting to what the check let through
            raise to_grpc_error(InvalidArgument(f"malformed {name}: {error}")) from None
