"""Typed errors survive the trip server -> status code + trailers -> client."""

from __future__ import annotations

import inspect
from types import SimpleNamespace

import pytest
from grpclib.const import Status
from grpclib.metadata import encode_grpc_message

import osqueue_core
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
    SegmentMissing,
    StateDiverged,
    StateMissing,
    StorageUnavailable,
    UnsupportedSchema,
)
from osqueue_io.status import (
    ERROR_KEY,
    JOB_ID_KEY,
    MAX_STATUS_MESSAGE_BYTES,
    MAX_TRAILER_VALUE_BYTES,
    NEW_EPOCH_KEY,
    NEW_IDENTITY_KEY,
    WIRE_ERRORS,
    CallContext,
    add_error_trailers,
    clip_status_message,
    error_from_status,
    to_grpc_error,
    wire_name,
)

pytestmark = pytest.mark.anyio

JOB_CALL = CallContext("Heartbeat", job_id="job-1", worker_id="w")


async def trailers_of(error: OsqueueError) -> dict[str, object]:
    """The trailing metadata the broker adds for ``error``."""
    # What grpclib hands the listener before sending trailers (the fields it uses).
    event = SimpleNamespace(status_details=to_grpc_error(error).details, metadata={})
    await add_error_trailers(event)  # type: ignore[arg-type]
    return event.metadata


async def round_trip(error: OsqueueError, call: CallContext = JOB_CALL) -> OsqueueError:
    grpc_error = to_grpc_error(error)
    trailers = await trailers_of(error)
    return error_from_status(grpc_error.status, grpc_error.message, trailers, call)


@pytest.mark.parametrize(
    "error",
    [
        InvalidArgument("job_id must be a non-empty string"),
        PayloadTooLarge("too big"),
        JobNotFound("job-1"),
        LeaseLost("job-1", "w"),
        BrokerStopping(),
        BrokerNotRunning("gone"),
        BrokerReplaced("brökér-b", 7, "10.0.0.2:9090"),
        BrokerReplaced("b", 3, None),
        NotOwner("owner-a", 4, "10.0.0.1:9090"),
        NotOwner("", 0, None),
        CorruptState("unreadable"),
        StateDiverged("edited by hand"),
        Overloaded("too many calls"),
        StorageUnavailable("the disk is full"),
        StateMissing("the state object is gone"),
        CallInterrupted("cancelled"),
        UnsupportedSchema(9, 2),
        JobNotDead("job job-1 is ready, not a dead letter"),
        JobAlreadyFinished("job-1", "completed"),
        JobCancelled("job-1"),
        SegmentMissing("segments/000002-0000000001.json"),
    ],
    ids=lambda error: type(error).__name__,
)
async def test_typed_errors_come_back_as_themselves(error: OsqueueError) -> None:
    back = await round_trip(error)
    assert type(back) is type(error)
    assert str(back) == str(error)
    assert back.retryable == error.retryable
    assert vars(back) == vars(error)


@pytest.mark.parametrize(
    "error",
    [JobNotFound("job-7"), JobAlreadyFinished("job-7", "dead"), JobCancelled("job-7")],
    ids=lambda error: type(error).__name__,
)
async def test_a_job_error_names_its_job_even_when_the_call_named_none(
    error: OsqueueError,
) -> None:
    # A Redrive names several jobs, a ListDead's `after` is not a job_id field: the
    # broker's trailer says which job the error is about.
    back = await round_trip(error, CallContext("Redrive"))
    assert type(back) is type(error)
    assert vars(back) == vars(error)


async def test_the_status_alone_reads_only_the_call_s_job() -> None:
    # Without the error's name, a job-id trailer alone does not make a LeaseLost.
    trailers = {JOB_ID_KEY: b"job-7"}
    for status in (Status.FAILED_PRECONDITION, Status.NOT_FOUND):
        fallback = error_from_status(status, "?", trailers, CallContext("Redrive"))
        assert type(fallback) is OsqueueError


async def test_the_replaced_broker_names_its_successor_in_the_message_too() -> None:
    grpc_error = to_grpc_error(BrokerReplaced("broker-b", 2, "10.0.0.2:9090"))
    assert grpc_error.status is Status.UNAVAILABLE
    assert "'broker-b'" in (grpc_error.message or "")
    assert "10.0.0.2:9090" in (grpc_error.message or "")


async def test_errors_sharing_a_status_are_told_apart_by_the_trailer() -> None:
    overloaded, too_large = Overloaded("busy"), PayloadTooLarge("big")
    assert to_grpc_error(overloaded).status is to_grpc_error(too_large).status
    assert type(await round_trip(overloaded)) is Overloaded
    assert (await round_trip(overloaded)).retryable
    assert type(await round_trip(too_large)) is PayloadTooLarge
    assert not (await round_trip(too_large)).retryable


def test_the_trailer_decides_over_the_status_code() -> None:
    named = error_from_status(
        Status.INVALID_ARGUMENT, "busy", {ERROR_KEY: "Overloaded"}, CallContext("Push")
    )
    assert type(named) is Overloaded
    assert str(named) == "busy"


REPLACED: dict[str, object] = {ERROR_KEY: "BrokerReplaced", NEW_IDENTITY_KEY: b"b"}


@pytest.mark.parametrize(
    ("trailers", "expected"),
    [
        ({ERROR_KEY: "SomethingNewer"}, BrokerNotRunning),  # unknown name: status decides
        ({ERROR_KEY: "BrokerReplaced"}, BrokerNotRunning),  # its fields are missing
        (REPLACED | {NEW_EPOCH_KEY: b"x"}, BrokerNotRunning),
        (REPLACED | {NEW_EPOCH_KEY: b"2"}, BrokerReplaced),
        ({ERROR_KEY: "UnsupportedSchema"}, BrokerNotRunning),
        ({ERROR_KEY: b"BrokerStopping"}, BrokerStopping),  # a bytes value is read too
    ],
)
def test_an_incomplete_or_unknown_trailer_falls_back_to_the_status(
    trailers: dict[str, object], expected: type[OsqueueError]
) -> None:
    assert type(error_from_status(Status.UNAVAILABLE, "down", trailers, JOB_CALL)) is expected


def test_every_osqueue_error_can_cross_the_wire() -> None:
    errors = {
        name
        for name, cls in inspect.getmembers(osqueue_core, inspect.isclass)
        if issubclass(cls, OsqueueError) and cls is not OsqueueError
    }
    assert errors == set(WIRE_ERRORS)


def test_a_subclass_is_reported_as_the_error_it_specialises() -> None:
    class DiskFull(StorageUnavailable):
        pass

    assert wire_name(DiskFull) == "StorageUnavailable"
    assert wire_name(OsqueueError) == "OsqueueError"  # not a wire error: status decides


@pytest.mark.parametrize(
    "text",
    ["x" * 10_000_000, "é" * 5000, "\U0001f600" * 2000, "%" * 3000, "a\udc80b" * 1000],
    ids=["ascii", "accents", "emoji", "percent", "surrogates"],
)
def test_status_messages_are_bounded_on_the_wire(text: str) -> None:
    # The core's own messages quote untrusted text briefly; the server must not rely on
    # that: any message, however long, is cut.
    error = to_grpc_error(InvalidArgument(text))
    assert error.message is not None
    assert len(encode_grpc_message(error.message)) <= MAX_STATUS_MESSAGE_BYTES
    assert error.message.endswith(f"({len(text)} characters)")
    assert clip_status_message("short and sweet") == "short and sweet"
    fits = "ü" * (MAX_STATUS_MESSAGE_BYTES // 6)  # 6 encoded bytes each: exactly fits
    assert clip_status_message(fits) == fits


async def test_trailer_values_are_bounded() -> None:
    trailers = await trailers_of(BrokerReplaced("b" * 100_000, 3, "a" * 100_000))
    values = [v for k, v in trailers.items() if k != ERROR_KEY]
    assert len(values) == 3
    assert all(isinstance(v, bytes) and len(v) <= MAX_TRAILER_VALUE_BYTES for v in values)


def test_statuses_without_osqueue_trailers() -> None:
    # Another implementation of the protocol, or an older osqueue.
    plain = error_from_status(Status.UNAVAILABLE, "down", None, JOB_CALL)
    assert isinstance(plain, BrokerNotRunning)
    assert plain.retryable
    for status in (Status.DEADLINE_EXCEEDED, Status.CANCELLED):
        interrupted = error_from_status(status, None, {}, JOB_CALL)
        assert type(interrupted) is CallInterrupted
        assert interrupted.retryable
        assert "may or may not have taken effect" in str(interrupted)
    too_large = error_from_status(Status.RESOURCE_EXHAUSTED, "message too big", {}, JOB_CALL)
    assert type(too_large) is PayloadTooLarge
    weird = error_from_status(Status.INTERNAL, "oops", {}, CallContext("Push"))
    assert type(weird) is OsqueueError
    assert not weird.retryable
    assert "Push failed with INTERNAL: oops" in str(weird)
    # FAILED_PRECONDITION means a lost lease only for calls about a job.
    schema = error_from_status(Status.FAILED_PRECONDITION, "upgrade", {}, CallContext("Stats"))
    assert type(schema) is OsqueueError


def test_every_osqueue_error_maps_to_a_real_status_and_none_to_internal() -> None:
    errors = [
        cls
        for _, cls in inspect.getmembers(osqueue_core, inspect.isclass)
        if issubclass(cls, OsqueueError) and cls is not OsqueueError
    ]
    assert UnsupportedSchema in errors
    for cls in errors:
        assert Status[cls.grpc_status] not in (Status.INTERNAL, Status.UNKNOWN), cls
