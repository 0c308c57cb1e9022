"""What goes over the wire: a client of the original protocol, and bad input of every kind.

The original client is compiled at test time with grpcio-tools from
``proto/compat/original_queue.proto`` (the Go broker's four RPCs, nothing else) and
runs on grpcio, a different gRPC implementation from ours.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from types import ModuleType

import attrs
import betterproto2
import grpc
import pytest

from osqueue_core import (
    MAX_KEY_LENGTH,
    MAX_QUEUE_NAME_LENGTH,
    BrokerConfig,
    InvalidArgument,
    JobNotFound,
    JobStatus,
    LeaseLost,
    PayloadTooLarge,
)
from osqueue_io._proto.osqueue.v1 import (
    ClaimBatchRequest,
    ClaimRequest,
    CompleteRequest,
    HeartbeatRequest,
    PushBatchRequest,
    PushBatchResponse,
    PushItem,
    PushRequest,
)
from osqueue_io.remote import QueueStats
from osqueue_io.server.codec import (
    REQUEST_SLACK_BYTES,
    MalformedMessage,
    check_wire_format,
    default_max_message_bytes,
)
from osqueue_io.sync import Worker

from .conftest import REPO_ROOT, BrokerProcess, Storage

StartBroker = Callable[..., BrokerProcess]
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModuleType, ModuleType]:
    """``original_queue_pb2`` and ``original_queue_pb2_grpc``, generated just now."""
    from grpc_tools import protoc  # type: ignore[import-untyped]

    out = tmp_path_factory.mktemp("original_proto")
    code = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{REPO_ROOT / 'proto' / 'compat'}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            "original_queue.proto",
        ]
    )
    assert code == 0
    sys.path.insert(0, str(out))
    try:
        return (
            importlib.import_module("original_queue_pb2"),
            importlib.import_module("original_queue_pb2_grpc"),
        )
    finally:
        sys.path.remove(str(out))


def test_a_client_of_the_original_protocol_works_unchanged(
    original: tuple[ModuleType, ModuleType], local_storage: Storage, start_broker: StartBroker
) -> None:
    pb2, pb2_grpc = original
    broker = start_broker(local_storage.data)
    with grpc.insecure_channel(broker.address) as channel:
        stub = pb2_grpc.QueueServiceStub(channel)
        assert stub.Claim(pb2.ClaimRequest(worker_id="go-worker"), timeout=5).empty
        pushed = stub.Push(pb2.PushRequest(data=b"\x00from go\xff"), timeout=5)
        claimed = stub.Claim(pb2.ClaimRequest(worker_id="go-worker"), timeout=5)
        assert (claimed.job_id, claimed.data, claimed.empty) == (
            pushed.job_id,
            b"\x00from go\xff",
            False,
        )
        beat = pb2.HeartbeatRequest(job_id=pushed.job_id, worker_id="go-worker")
        # Our extension (lease_timeout_ms) arrives as an unknown field: nothing it knows.
        assert stub.Heartbeat(beat, timeout=5).ListFields() == []

        with pytest.raises(grpc.RpcError) as not_holder:
            stub.Complete(pb2.CompleteRequest(job_id=pushed.job_id, worker_id="other"), timeout=5)
        assert not_holder.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        with pytest.raises(grpc.RpcError) as unknown:
            stub.Heartbeat(pb2.HeartbeatRequest(job_id="no-such-job", worker_id="w"), timeout=5)
        assert unknown.value.code() is grpc.StatusCode.NOT_FOUND

        done = pb2.CompleteRequest(job_id=pushed.job_id, worker_id="go-worker")
        assert stub.Complete(done, timeout=5).ListFields() == []
        assert stub.Claim(pb2.ClaimRequest(worker_id="go-worker"), timeout=5).empty
    assert broker.terminate() == 0, broker.text


def without_ages(stats: QueueStats) -> QueueStats:
    """``stats`` without what changes by itself: how long the oldest jobs waited."""
    ages = tuple(attrs.evolve(queue, oldest_ready_age=None) for queue in stats.queues)
    return attrs.evolve(stats, queues=ages)


# Raw request bytes that no protobuf encoder would write.
MALFORMED = {
    "Push": [
        b"\xff\xff\xff",  # a varint that never ends
        b"\x0a\x05ab",  # bytes field claiming 5 bytes, 2 present
        b"\x08\x01",  # field 1 (bytes) sent as a varint
        b"\x0b\x01",  # a group start: not a wire type of proto3
        b"\x18\x80\x80\x80\x80\x10",  # priority (sint32) past its zigzag range
        b"\x22\x01",  # delay_ms (uint64) sent length-delimited
    ],
    "PushBatch": [
        b"\x12\x02\x0a\x05",  # an item whose payload claims 5 bytes, none present
        b"\x12\x03\x32\x01\xff",  # an item whose key is not UTF-8
        b"\x10\x01",  # items sent as a varint
    ],
    "Claim": [
        b"\x0a\x02\xff\xfe",  # worker_id is not UTF-8
        b"\x10\xff\xff\xff\xff\x7f",  # wait_ms does not fit a uint32
        b"\x1a\x01\xff",  # a queue name that is not UTF-8
    ],
    "Heartbeat": [b"\x12"],  # worker_id: a length that is missing
    "ClaimBatch": [b"\x20\x80\x80\x80\x80\x10"],  # max_jobs does not fit a uint32
    "Complete": [b"\x1a\x05ab"],  # a result claiming 5 bytes, 2 present
}


def test_bad_input_gets_a_clear_status_and_harms_nothing(
    local_storage: Storage, start_broker: StartBroker
) -> None:
    broker = start_broker(local_storage.data)
    with (
        Worker(broker.address, worker_id="holder") as holder,
        Worker(broker.address, worker_id="other") as other,
    ):
        kept = holder.push(b"keep me")
        held_id = holder.push(b"held")
        job = holder.claim()
        assert job is not None
        assert job.id == kept
        before = without_ages(holder.stats())

        # Semantic errors, as typed errors. (The Worker refuses empty ids itself; the
        # broker's answer to one is checked over the bare channel below.)
        with pytest.raises(InvalidArgument):
            holder.heartbeat("")
        with pytest.raises(InvalidArgument):
            holder.complete("")
        with pytest.raises(JobNotFound):
            holder.heartbeat("no-such-job")
        with pytest.raises(JobNotFound):
            holder.fail("no-such-job")
        with pytest.raises(LeaseLost):
            other.complete(kept)
        with pytest.raises(LeaseLost):
            other.heartbeat(held_id)  # ready, held by nobody
        with pytest.raises(PayloadTooLarge):
            holder.push(b"x" * (MiB + 1))
        with pytest.raises(PayloadTooLarge):
            holder.push_batch([b"fine", b"x" * (MiB + 1)])
        with pytest.raises(PayloadTooLarge):
            holder.push_batch([b"tiny"] * 1001)

        # The same over a bare channel, plus malformed bytes and an unknown method.
        with grpc.insecure_channel(broker.address) as channel:

            def status_of(method: str, request: bytes) -> grpc.StatusCode:
                call = channel.unary_unary(f"/osqueue.v1.QueueService/{method}")
                with pytest.raises(grpc.RpcError) as error:
                    call(request, timeout=5)
                code: grpc.StatusCode = error.value.code()
                return code

            assert status_of("Claim", bytes(ClaimRequest(worker_id=""))) == (
                grpc.StatusCode.INVALID_ARGUMENT
            )
            assert status_of("Complete", bytes(CompleteRequest(job_id="", worker_id="w"))) == (
                grpc.StatusCode.INVALID_ARGUMENT
            )
            assert status_of("Heartbeat", bytes(HeartbeatRequest(job_id="?", worker_id="w"))) == (
                grpc.StatusCode.NOT_FOUND
            )
            oversized = bytes(PushBatchRequest(data=[b"x" * (MiB + 1)]))
            assert status_of("PushBatch", oversized) == grpc.StatusCode.RESOURCE_EXHAUSTED
            for method, requests in MALFORMED.items():
                for request in requests:
                    assert status_of(method, request) == grpc.StatusCode.INVALID_ARGUMENT, (
                        method,
                        request,
                    )
            assert status_of("Frobnicate", b"") == grpc.StatusCode.UNIMPLEMENTED

        # The broker is still up and nothing changed.
        assert without_ages(holder.stats()) == before
        assert (before.ready, before.claimed) == (1, 1)
        holder.complete(kept)
    assert broker.terminate() == 0, broker.text
    assert "Traceback" not in broker.text, "no bad input may reach the broker as a crash"
    state = local_storage.read_state()
    assert [(j.id, j.payload, j.status) for j in state.jobs if j.id == held_id] == [
        (held_id, b"held", JobStatus.READY)
    ]


REQUEST_TYPES: dict[str, type[betterproto2.Message]] = {
    "Push": PushRequest,
    "PushBatch": PushBatchRequest,
    "Claim": ClaimRequest,
    "Heartbeat": HeartbeatRequest,
    "ClaimBatch": ClaimBatchRequest,
    "Complete": CompleteRequest,
}


@pytest.mark.parametrize(
    ("message_type", "request_bytes"),
    [
        *((REQUEST_TYPES[method], r) for method, requests in MALFORMED.items() for r in requests),
        (ClaimRequest, b"\x00\x01"),  # field number 0
        (ClaimRequest, b"\x0d\x01\x02"),  # truncated fixed32
        (PushBatchRequest, b"\x0a\x01x\x08\x01"),  # second payload sent as a varint
    ],
)
def test_the_strict_codec_refuses_malformed_bytes(
    message_type: type[betterproto2.Message], request_bytes: bytes
) -> None:
    with pytest.raises(MalformedMessage):
        check_wire_format(request_bytes, message_type)


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"",
        bytes(ClaimRequest(worker_id="wörker", wait_ms=2**32 - 1)),
        bytes(ClaimRequest(worker_id="w")) + b"\x98\x06\x01",  # unknown field 99: skipped
        bytes(ClaimRequest(worker_id="w")) + b"\xa5\x06\x01\x02\x03\x04",  # unknown fixed32
    ],
)
def test_the_strict_codec_accepts_what_protobuf_accepts(request_bytes: bytes) -> None:
    check_wire_format(request_bytes, ClaimRequest)


@pytest.mark.parametrize(
    ("message_type", "request_bytes"),
    [
        (PushRequest, bytes(PushRequest(priority=-(2**31)))),  # the zigzag maximum
        (PushRequest, bytes(PushRequest(priority=2**31 - 1, delay_ms=2**64 - 1))),
        (ClaimRequest, bytes(ClaimRequest(queues=["", "é", "emails"]))),
        (CompleteRequest, bytes(CompleteRequest(result=b""))),  # present, and empty
        (
            PushBatchRequest,
            bytes(PushBatchRequest(items=[PushItem(data=b"a", key="k"), PushItem()])),
        ),
        # An unknown field inside an item is skipped too.
        (PushBatchRequest, b"\x12\x06\x0a\x01a\x98\x06\x01"),
    ],
)
def test_the_strict_codec_accepts_the_lifecycle_fields(
    message_type: type[betterproto2.Message], request_bytes: bytes
) -> None:
    check_wire_format(request_bytes, message_type)
    message_type.parse(request_bytes)


def test_the_strict_codec_refuses_field_types_it_cannot_check() -> None:
    # A repeated number may arrive packed or not: no request may have one unchecked.
    with pytest.raises(TypeError, match="repeated bool"):
        check_wire_format(b"", PushBatchResponse)


def test_the_default_message_limit_fits_a_batch_with_every_option_at_its_limit() -> None:
    config = BrokerConfig()
    each = config.max_batch_bytes // config.max_batch_ops
    item = PushItem(
        data=b"x" * each,
        queue="q" * MAX_QUEUE_NAME_LENGTH,
        priority=-(2**31),
        delay_ms=2**64 - 1,
        run_at_ms=2**64 - 1,
        key="\U0001f600" * MAX_KEY_LENGTH,  # four bytes each in UTF-8
        max_attempts=2**32 - 1,
    )
    largest = bytes(PushBatchRequest(items=[item] * config.max_batch_ops))
    limit = default_max_message_bytes(config)
    assert len(largest) <= limit - REQUEST_SLACK_BYTES
    assert len(largest) > limit - REQUEST_SLACK_BYTES - config.max_batch_ops * 50  # and tight
