"""A strict protobuf codec for the broker: malformed requests become INVALID_ARGUMENT.

betterproto2 decodes leniently: truncated fields, wrong wire types and invalid UTF-8
come out as odd values or as exceptions that grpclib would report as "Internal Server
Error". The broker must answer every bad request with a clear status and carry on, so
the codec checks the wire format of every request before betterproto2 parses it:

* every field is well formed (varints end, lengths stay inside the message);
* a known field has the wire type its declaration implies, strings are UTF-8, and
  integers fit their declared width;
* unknown fields are skipped, as protobuf requires (a newer client may send them);
* a message longer than ``max_message_bytes`` is refused with RESOURCE_EXHAUSTED
  (``PayloadTooLarge``) before it is parsed. (The broker's request reader refuses it
  earlier still, from its length prefix: :mod:`osqueue_io.server.reader`.)

Only the scalar field types osqueue's requests use are supported; a request message
with any other field type is a programming error, reported the first time it is seen.
"""

from __future__ import annotations

import dataclasses
from functools import cache
from typing import Any

import betterproto2
from grpclib.encoding.proto import ProtoCodec

from osqueue_core import BrokerConfig, InvalidArgument, PayloadTooLarge
from osqueue_io.status import to_grpc_error

#: Wire type of each supported field type (0 varint, 2 length-delimited).
_WIRE_TYPES = {
    betterproto2.TYPE_STRING: 2,
    betterproto2.TYPE_BYTES: 2,
    betterproto2.TYPE_BOOL: 0,
    betterproto2.TYPE_UINT32: 0,
    betterproto2.TYPE_UINT64: 0,
}
_MAXIMUM = {
    betterproto2.TYPE_BOOL: 1,
    betterproto2.TYPE_UINT32: 2**32 - 1,
    betterproto2.TYPE_UINT64: 2**64 - 1,
}

#: Room in a request besides its payloads: ids and error texts (a few KiB at their
#: limits) and unknown fields a newer client may add.
REQUEST_SLACK_BYTES = 64 * 1024
#: Protobuf framing of one payload at most: a one-byte tag and a length varint.
_PAYLOAD_FRAMING_BYTES = 1 + 10


def default_max_message_bytes(config: BrokerConfig) -> int:
    """The largest request a broker with ``config`` can accept: a PushBatch at the
    batch limits (or one Push at the payload limit), plus framing and slack. Anything
    larger is refused before it is read."""
    payload_bytes = max(config.max_batch_bytes, config.max_payload_bytes)
    framing = config.max_batch_ops * _PAYLOAD_FRAMING_BYTES
    return payload_bytes + framing + REQUEST_SLACK_BYTES


class MalformedMessage(ValueError):
    """The bytes are not a valid encoding of the expected message."""


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
def _fields(message_type: type[betterproto2.Message]) -> dict[int, str]:
    """Field number -> proto type of ``message_type``, checked once per type."""
    fields: dict[int, str] = {}
    for field in dataclasses.fields(message_type):  # type: ignore[arg-type]
        meta = betterproto2.FieldMetadata.get(field)
        if meta.proto_type not in _WIRE_TYPES:
            raise TypeError(
                f"{message_type.__name__}.{field.name}: the strict codec does not support "
                f"{meta.proto_type} fields; extend osqueue_io/server/codec.py"
            )
        fields[meta.number] = meta.proto_type
    return fields


def check_wire_format(data: bytes, message_type: type[betterproto2.Message]) -> None:
    """Raise :class:`MalformedMessage` unless ``data`` is a valid ``message_type``."""
    fields = _fields(message_type)
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
        proto_type = fields.get(number)
        if proto_type is None:
            continue  # an unknown field (a newer client): skipped, as protobuf does
        if _WIRE_TYPES[proto_type] != wire_type:
            raise MalformedMessage(f"field {number}: wire type {wire_type} for a {proto_type}")
        if proto_type == betterproto2.TYPE_STRING:
            assert isinstance(value, bytes)
            try:
                value.decode("utf-8")
            except UnicodeDecodeError:
                raise MalformedMessage(f"field {number}: string is not UTF-8") from None
        maximum = _MAXIMUM.get(proto_type)
        if maximum is not None and isinstance(value, int) and value > maximum:
            raise MalformedMessage(f"field {number}: {value} is out of range for a {proto_type}")


class StrictProtoCodec(ProtoCodec):
    """grpclib's protobuf codec, refusing what :func:`check_wire_format` refuses."""

    def __init__(self, max_message_bytes: int | None = None) -> None:
        if max_message_bytes is None:
            max_message_bytes = default_max_message_bytes(BrokerConfig())
        if max_message_bytes < 1:
            raise ValueError("max_message_bytes must be positive")
        self.max_message_bytes = max_message_bytes

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
            check_wire_format(data, message_type)
        except MalformedMessage as error:
            raise to_grpc_error(InvalidArgument(f"malformed {name}: {error}")) from None
        try:
            return super().decode(data, message_type)
        except Exception as error:  # betterproto2 objecting to what the check let through
            raise to_grpc_error(InvalidArgument(f"malformed {name}: {error}")) from None
