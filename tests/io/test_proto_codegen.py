"""The committed protocol code is current, and the protocol still speaks the original's wire.

Two promises are checked here:

* ``osqueue_io/_proto`` is exactly what ``scripts/gen_proto.py`` makes from ``proto/``
  today (so nobody edits generated code by hand or forgets to regenerate);
* ``proto/osqueue/v1/queue.proto`` only extended the original Go broker's protocol
  (``proto/compat/original_queue.proto``): same service, RPCs, message names, field
  numbers and types, and bytes written by one side decode on the other.

The original's messages come from real protobuf (grpcio-tools' protoc + the
``protobuf`` runtime), loaded into a private ``DescriptorPool`` rather than imported as
``_pb2`` modules: nothing is registered in protobuf's global pool, so tests that do
import generated ``_pb2`` modules of the same ``osqueue.v1`` package cannot clash.
"""

from __future__ import annotations

import dataclasses
import difflib
import subprocess
import sys
from pathlib import Path
from typing import Any

import betterproto2
import pytest
from google.protobuf import (  # type: ignore[import-untyped]
    descriptor_pb2,
    descriptor_pool,
    message_factory,
)
from google.protobuf.message import Message as ProtobufMessage  # type: ignore[import-untyped]

from osqueue_io._proto.osqueue import v1 as ours

REPO_ROOT = Path(__file__).resolve().parents[2]
COMMITTED = REPO_ROOT / "osqueue_io" / "_proto"
GEN_SCRIPT = REPO_ROOT / "scripts" / "gen_proto.py"
PROTO_ROOT = REPO_ROOT / "proto"
ORIGINAL_PROTO = PROTO_ROOT / "compat" / "original_queue.proto"
OUR_PROTO = PROTO_ROOT / "osqueue" / "v1" / "queue.proto"
SERVICE = "osqueue.v1.QueueService"


# --- Generated code is current -------------------------------------------------------


def _tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` by relative path, skipping bytecode caches."""
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts
    }


def test_committed_code_matches_regeneration(tmp_path: Path) -> None:
    fresh_dir = tmp_path / "_proto"
    subprocess.run([sys.executable, str(GEN_SCRIPT), "--out", str(fresh_dir)], check=True)
    committed, fresh = _tree(COMMITTED), _tree(fresh_dir)

    problems: list[str] = []
    for name in sorted(committed.keys() - fresh.keys()):
        problems.append(f"committed but no longer generated: {name}")
    for name in sorted(fresh.keys() - committed.keys()):
        problems.append(f"generated but not committed: {name}")
    for name in sorted(committed.keys() & fresh.keys()):
        if committed[name] != fresh[name]:
            problems.extend(
                difflib.unified_diff(
                    committed[name].decode().splitlines(),
                    fresh[name].decode().splitlines(),
                    fromfile=f"committed/{name}",
                    tofile=f"regenerated/{name}",
                    lineterm="",
                )
            )
    if problems:
        pytest.fail(
            "osqueue_io/_proto is stale; run `make proto` (scripts/gen_proto.py) and commit:\n"
            + "\n".join(problems),
            pytrace=False,
        )


# --- Real protobuf classes for both .proto files ------------------------------------


def _descriptor_set(proto: Path, out: Path) -> descriptor_pb2.FileDescriptorSet:
    from grpc_tools import protoc  # type: ignore[import-untyped]  # test-only dependency

    include = proto.parent if proto == ORIGINAL_PROTO else PROTO_ROOT
    status = protoc.main(
        [
            "protoc",
            f"-I{include}",
            f"--descriptor_set_out={out}",
            str(proto.relative_to(include)),
        ]
    )
    assert status == 0, f"protoc failed on {proto}"
    return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


@pytest.fixture(scope="module")
def original_file(tmp_path_factory: pytest.TempPathFactory) -> descriptor_pb2.FileDescriptorProto:
    out = tmp_path_factory.mktemp("original") / "original.pb"
    (file,) = _descriptor_set(ORIGINAL_PROTO, out).file
    return file


@pytest.fixture(scope="module")
def our_file(tmp_path_factory: pytest.TempPathFactory) -> descriptor_pb2.FileDescriptorProto:
    out = tmp_path_factory.mktemp("ours") / "ours.pb"
    (file,) = _descriptor_set(OUR_PROTO, out).file
    return file


OriginalClass = type[ProtobufMessage]


@pytest.fixture(scope="module")
def original(original_file: descriptor_pb2.FileDescriptorProto) -> dict[str, OriginalClass]:
    """The original's message classes by short name, from a private descriptor pool."""
    pool = descriptor_pool.DescriptorPool()
    pool.Add(original_file)
    return {
        message.name: message_factory.GetMessageClass(
            pool.FindMessageTypeByName(f"{original_file.package}.{message.name}")
        )
        for message in original_file.message_type
    }


# --- The schema only grew ----------------------------------------------------------


def test_original_file_is_the_original(original_file: descriptor_pb2.FileDescriptorProto) -> None:
    # Guards the guard: an edit to the compat file would make the checks below vacuous.
    assert original_file.package == "osqueue.v1"
    (service,) = original_file.service
    assert [method.name for method in service.method] == [
        "Push",
        "Claim",
        "Heartbeat",
        "Complete",
    ]
    fields = {
        message.name: [(field.name, field.number) for field in message.field]
        for message in original_file.message_type
    }
    assert fields == {
        "PushRequest": [("data", 1)],
        "PushResponse": [("job_id", 1)],
        "ClaimRequest": [("worker_id", 1)],
        "ClaimResponse": [("job_id", 1), ("data", 2), ("empty", 3)],
        "HeartbeatRequest": [("job_id", 1), ("worker_id", 2)],
        "HeartbeatResponse": [],
        "CompleteRequest": [("job_id", 1), ("worker_id", 2)],
        "CompleteResponse": [],
    }


def test_our_proto_extends_the_original_additively(
    original_file: descriptor_pb2.FileDescriptorProto,
    our_file: descriptor_pb2.FileDescriptorProto,
) -> None:
    assert our_file.package == original_file.package
    (their_service,) = original_file.service
    (our_service,) = our_file.service
    assert our_service.name == their_service.name
    our_methods = {method.name: method for method in our_service.method}
    for method in their_service.method:
        assert method.name in our_methods, f"RPC {method.name} was removed"
        ours_ = our_methods[method.name]
        assert (ours_.input_type, ours_.output_type) == (method.input_type, method.output_type)
        assert (ours_.client_streaming, ours_.server_streaming) == (
            method.client_streaming,
            method.server_streaming,
        )

    our_messages = {message.name: message for message in our_file.message_type}
    for message in original_file.message_type:
        assert message.name in our_messages, f"message {message.name} was removed or renamed"
        our_fields = {field.number: field for field in our_messages[message.name].field}
        for field in message.field:
            mine = our_fields.get(field.number)
            assert mine is not None, f"{message.name} lost field number {field.number}"
            assert (mine.name, mine.type, mine.label, mine.type_name) == (
                field.name,
                field.type,
                field.label,
                field.type_name,
            ), f"{message.name}.{field.name} (= {field.number}) changed"
            # proto3 `optional` changes presence semantics: keep plain fields plain.
            assert mine.proto3_optional == field.proto3_optional


# --- Bytes cross between the original and us --------------------------------------

# One value for every original field, none of them a default (defaults are not encoded,
# which would make the check vacuous).
ORIGINAL_VALUES: dict[str, dict[str, Any]] = {
    "PushRequest": {"data": b"\x00payload\xff"},
    "PushResponse": {"job_id": "0000000001-0000000042"},
    "ClaimRequest": {"worker_id": "worker-7"},
    "ClaimResponse": {"job_id": "job-1", "data": b"\x01\x02", "empty": True},
    "HeartbeatRequest": {"job_id": "job-1", "worker_id": "worker-7"},
    "HeartbeatResponse": {},
    "CompleteRequest": {"job_id": "job-1", "worker_id": "worker-7"},
    "CompleteResponse": {},
}

# Our extension fields, set to non-defaults: an original peer must skip them.
EXTENSION_VALUES: dict[str, dict[str, Any]] = {
    "PushRequest": {
        "queue": "emails",
        "priority": -7,
        "delay_ms": 1500,
        "run_at_ms": 2**41,
        "key": "order-17",
        "max_attempts": 4,
    },
    "PushResponse": {"existing": True},
    "ClaimRequest": {"wait_ms": 30_000, "queues": ["emails", "default"]},
    "ClaimResponse": {
        "attempts": 3,
        "lease_timeout_ms": 2**40,
        "queue": "emails",
        "priority": -(2**31),
        "max_attempts": 5,
    },
    "HeartbeatResponse": {"lease_timeout_ms": 15_000, "cancel_requested": True},
    # proto3 `optional`: present even when empty, unlike a plain field.
    "CompleteRequest": {"result": b""},
}


def _our_class(name: str) -> type[betterproto2.Message]:
    cls: object = getattr(ours, name)
    assert isinstance(cls, type)
    assert issubclass(cls, betterproto2.Message)
    return cls


def _is_optional(name: str, field_name: str) -> bool:
    (field,) = (f for f in dataclasses.fields(_our_class(name)) if f.name == field_name)
    return bool(betterproto2.FieldMetadata.get(field).optional)


def test_values_cover_every_original_message(original: dict[str, OriginalClass]) -> None:
    assert set(ORIGINAL_VALUES) == set(original)


@pytest.mark.parametrize("name", sorted(ORIGINAL_VALUES))
def test_original_bytes_decode_in_ours(name: str, original: dict[str, OriginalClass]) -> None:
    values = ORIGINAL_VALUES[name]
    wire = original[name](**values).SerializeToString()
    decoded = _our_class(name).parse(wire)
    assert {key: getattr(decoded, key) for key in values} == values
    for key, value in EXTENSION_VALUES.get(name, {}).items():
        # An original peer never sends extensions: each reads as its zero value (None
        # for a proto3 `optional` field, which says "not sent" apart from "empty").
        zero = None if _is_optional(name, key) else type(value)()
        assert getattr(decoded, key) == zero


@pytest.mark.parametrize("name", sorted(ORIGINAL_VALUES))
def test_our_bytes_decode_in_original(name: str, original: dict[str, OriginalClass]) -> None:
    values = ORIGINAL_VALUES[name]
    ours_plain = bytes(_our_class(name)(**values))
    # Without extensions, we write exactly what the original writes.
    assert ours_plain == original[name](**values).SerializeToString()

    extensions = EXTENSION_VALUES.get(name, {})
    extended = bytes(_our_class(name)(**values, **extensions))
    assert len(extended) > len(ours_plain) or not extensions  # the extensions were sent
    decoded = original[name].FromString(extended)
    assert {key: getattr(decoded, key) for key in values} == values
