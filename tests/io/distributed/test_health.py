"""The broker's ``grpc.health.v1.Health``, asked by grpclib's own health client.

SERVING while the broker serves as the owner; a Watch hears NOT_SERVING when the broker
starts to drain and then ends, so it never holds a graceful stop up. (A standby's
NOT_SERVING is in test_failover.py, over TLS in tests/io/security.)
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import anyio
import pytest
from grpclib import GRPCError
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.health.v1.health_grpc import HealthStub  # type: ignore[import-untyped]
from grpclib.health.v1.health_pb2 import (  # type: ignore[import-untyped]
    HealthCheckRequest,
    HealthCheckResponse,
)

from osqueue_io.server import BrokerServer
from osqueue_io.storage import open_store
from tests.io.conftest import wait_for_port
from tests.io.health import health_status

pytestmark = pytest.mark.anyio

#: Far longer than any step of the test: a drain that waited for it would show.
DRAIN_TIMEOUT = 60.0


async def serving(app: BrokerServer) -> int:
    with anyio.fail_after(10):
        while app.address is None:  # noqa: ASYNC110 (no event to wait for)
            await anyio.sleep(0.01)
    port = int(app.address.rsplit(":", 1)[1])
    await anyio.to_thread.run_sync(wait_for_port, "127.0.0.1", port)
    return port


@pytest.fixture
async def broker() -> AsyncIterator[tuple[BrokerServer, int]]:
    store = open_store("memory://")
    app = BrokerServer(store, host="127.0.0.1", port=0, drain_timeout=DRAIN_TIMEOUT)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(lambda: app.run(handle_signals=False))
        yield app, await serving(app)
        app.stop()


async def test_check_says_serving_for_the_server_and_the_queue_service(
    broker: tuple[BrokerServer, int],
) -> None:
    _, port = broker
    assert await health_status(port) == "SERVING"
    assert await health_status(port, "osqueue.v1.QueueService") == "SERVING"
    with pytest.raises(GRPCError) as unknown:
        await health_status(port, "some.other.Service")
    assert unknown.value.status is Status.NOT_FOUND


async def test_a_watch_hears_the_drain_and_ends_without_holding_it_up(
    broker: tuple[BrokerServer, int],
) -> None:
    app, port = broker
    channel = Channel("127.0.0.1", port)
    statuses = []
    try:
        async with HealthStub(channel).Watch.open(timeout=30) as stream:
            await stream.send_message(HealthCheckRequest(service=""), end=True)
            first = await stream.recv_message()
            statuses.append(first.status)
            started = time.monotonic()
            app.stop()
            while (reply := await stream.recv_message()) is not None:
                statuses.append(reply.status)
            await stream.recv_trailing_metadata()
            assert stream.peer is not None
    finally:
        channel.close()
    assert statuses == [HealthCheckResponse.SERVING, HealthCheckResponse.NOT_SERVING]
    assert time.monotonic() - started < DRAIN_TIMEOUT / 4


async def test_a_watch_of_an_unknown_service_says_so(broker: tuple[BrokerServer, int]) -> None:
    _, port = broker
    channel = Channel("127.0.0.1", port)
    try:
        async with HealthStub(channel).Watch.open(timeout=10) as stream:
            await stream.send_message(HealthCheckRequest(service="nope"), end=True)
            reply = await stream.recv_message()
            assert reply.status == HealthCheckResponse.SERVICE_UNKNOWN
            await stream.cancel()
    finally:
        channel.close()
