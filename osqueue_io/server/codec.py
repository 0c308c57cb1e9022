"""A strict protobuf codec for the broker: malformed requests become INVALID_ARGUMENT.

betterproto2 decodes leniently: truncated fields, wrong wire types and invalid UTF-8
come out as odd values or as exceptions that grpclib would report as "Internal Server
Error". The broker must answer every bad request with a clear status and carry on, so
the codec checks the wire format of every request as it parses it (one pass, with
:mod:`osqueue_io.protowire`, which also encodes the replies far faster than
betterproto2):

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

from typing import Any

import betterproto2

from osqueue_core import (
    MAX_KEY_LENGTH,
    MAX_QUEUE_NAME_LENGTH,
    MAX_QUEUES_PER_CLAIM,
    BrokerConfig,
    InvalidArgument,
    PayloadTooLarge,
)
from osqueue_io import protowire
from osqueue_io.protowire import FastProtoCodec, MalformedMessage, TooManyEntries
from osqueue_io.status import to_grpc_error

__all__ = [
    "DEFAULT_MAX_REPEATED",
    "MAX_NESTING",
    "MalformedMessage",
    "StrictProtoCodec",
    "TooManyEntries",
    "check_wire_format",
    "default_max_message_bytes",
]

#: Nested messages deeper than this are refused (osqueue's requests nest one level).
MAX_NESTING = protowire.MAX_NESTING

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


def check_wire_format(
    data: bytes,
    message_type: type[betterproto2.Message],
    depth: int = 0,
    max_repeated: int = DEFAULT_MAX_REPEATED,
) -> None:
    """Raise :class:`MalformedMessage` unless ``data`` is a valid ``message_type`` with
    at most ``max_repeated`` entries in each repeated field (counted as they are read,
    so a request of millions of tiny entries costs no more than its first few);
    ``TypeError`` if ``message_type`` has a field type this check does not support."""
    protowire.check_strict_support(message_type)
    protowire.decode(data, message_type, strict=True, max_repeated=max_repeated, depth=depth)


class StrictProtoCodec(FastProtoCodec):
    """grpclib's protobuf codec, refusing what :func:`check_wire_format` refuses (and
    encoding replies with :mod:`osqueue_io.protowire`)."""

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
            # Checked and parsed in one pass (betterproto2's own parser is far slower).
            return protowire.decode(data, message_type, strict=True, max_repeated=self.max_repeated)
        except TooManyEntries as error:
            raise to_grpc_error(PayloadTooLarge(f"{name}: {error}")) from None
        except MalformedMessage as error:
            raise to_grpc_error(InvalidArgument(f"malformed {name}: {error}")) from None
