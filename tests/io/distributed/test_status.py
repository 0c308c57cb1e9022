"""Typed errors survive the trip server -> status code + trailers -> client."""

from __future__ import annotations

import inspect
from types import SimpleNamespace

import pytest
from grpclib.const import Status

import osqueue_core
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
    UnsupportedSchema,
)
from osqueue_io.status import (
    CallContext,
    add_error_trailers,
    error_from_status,
    to_grpc_error,
)

pytestmark = pytest.mark.anyio

JOB_CALL = CallContext("Heartbeat", job_id="job-1", worker_id="w")


async def round_trip(error: OsqueueError, call: CallContext = JOB_CALL) -> OsqueueError:
    grpc_error = to_grpc_error(error)
    # What grpclib hands the listener before sending trailers (the fields it uses).
    event = SimpleNamespace(status_details=grpc_error.details, metadata={})
    await add_error_trailers(event)  # type: ignore[arg-type]
    return error_from_status(grpc_error.status, grpc_error.message, event.metadata, call)


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
        CorruptState("unreadable"),
        StateDiverged("edited by hand"),
    ],
    ids=lambda error: type(error).__name__,
)
async def test_typed_errors_come_back_as_themselves(error: OsqueueError) -> None:
    back = await round_trip(error)
    assert type(back) is type(error)
    assert str(back) == str(error)
    assert back.retryable == error.retryable
    assert vars(back) == vars(error)


async def test_the_replaced_broker_names_its_successor_in_the_message_too() -> None:
    grpc_error = to_grpc_error(BrokerReplaced("broker-b", 2, "10.0.0.2:9090"))
    assert grpc_error.status is Status.UNAVAILABLE
    assert "'broker-b'" in (grpc_error.message or "")
    assert "10.0.0.2:9090" in (grpc_error.message or "")


def test_statuses_without_osqueue_trailers() -> None:
    # Another implementation of the protocol, or an older osqueue.
    plain = error_from_status(Status.UNAVAILABLE, "down", None, JOB_CALL)
    assert isinstance(plain, BrokerNotRunning)
    assert plain.retryable
    late = error_from_status(Status.DEADLINE_EXCEEDED, None, {}, JOB_CALL)
    assert isinstance(late, BrokerNotRunning)
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
