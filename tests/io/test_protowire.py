"""osqueue_io.protowire against betterproto2: the same bytes, the same messages.

Every message type of osqueue.v1 is drawn at random (every field, with values at the
edges of its type) and encoded by both; each decodes the other's bytes to an equal
message. Wire-format refusals of the strict mode are in
tests/io/distributed/test_wire.py (through ``check_wire_format``)."""

from __future__ import annotations

import dataclasses
import inspect

import betterproto2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from osqueue_io import protowire
from osqueue_io._proto.osqueue import v1 as pb

MESSAGE_TYPES = sorted(
    (
        cls
        for _, cls in inspect.getmembers(pb, inspect.isclass)
        if issubclass(cls, betterproto2.Message) and cls.__module__ == pb.__name__
    ),
    key=lambda cls: cls.__name__,
)

_SCALARS = {
    betterproto2.TYPE_STRING: st.text(max_size=8),
    betterproto2.TYPE_BYTES: st.binary(max_size=8),
    betterproto2.TYPE_BOOL: st.booleans(),
    betterproto2.TYPE_UINT32: st.sampled_from([0, 1, 127, 128, 300, 2**32 - 1]),
    betterproto2.TYPE_UINT64: st.sampled_from([0, 1, 127, 128, 2**35, 2**64 - 1]),
    betterproto2.TYPE_SINT32: st.sampled_from([0, 1, -1, 63, -64, 2**31 - 1, -(2**31)]),
}


def messages(cls: type[betterproto2.Message], depth: int = 0) -> st.SearchStrategy[object]:
    fields = {}
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        meta = betterproto2.FieldMetadata.get(field)
        if meta.proto_type == betterproto2.TYPE_MAP:
            value: st.SearchStrategy[object] = st.dictionaries(
                st.text(max_size=6), st.binary(max_size=6), max_size=3
            )
        elif meta.proto_type == betterproto2.TYPE_MESSAGE:
            nested = cls._cls_for(field)
            value = st.none() if depth > 1 else messages(nested, depth + 1)
            if meta.repeated:
                value = (
                    st.lists(messages(nested, depth + 1), max_size=3) if depth <= 1 else st.just([])
                )
        else:
            value = _SCALARS[meta.proto_type]
            if meta.repeated:
                value = st.lists(value, max_size=3)
            elif meta.optional:
                value = st.none() | value
        fields[field.name] = value
    return st.builds(cls, **fields)


@pytest.mark.parametrize("message_type", MESSAGE_TYPES, ids=lambda cls: cls.__name__)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_the_same_bytes_and_messages_as_betterproto2(
    message_type: type[betterproto2.Message], data: st.DataObject
) -> None:
    message = data.draw(messages(message_type))
    expected = bytes(message)
    assert protowire.encode(message) == expected
    assert protowire.decode(expected, message_type) == message_type.parse(expected)
    assert bytes(protowire.decode(expected, message_type)) == expected


def test_unknown_fields_are_kept_and_written_back() -> None:
    data = bytes(pb.ClaimRequest(worker_id="w")) + b"\x98\x06\x01"  # field 99
    decoded = protowire.decode(data, pb.ClaimRequest)
    assert decoded == pb.ClaimRequest.parse(data)
    assert protowire.encode(decoded) == data


def test_a_packed_repeated_number_is_read_packed_or_not() -> None:
    packed = bytes(pb.PushBatchResponse(job_ids=["a"], existing=[True, False, True]))
    unpacked = b"\x0a\x01a" + b"\x10\x01\x10\x00\x10\x01"
    for data in (packed, unpacked):
        assert protowire.decode(data, pb.PushBatchResponse).existing == [True, False, True]
