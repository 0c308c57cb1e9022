"""Attacks on the broker's gRPC side of the lifecycle features (issue 9). Each test is
the smallest reproduction of something that broke, marked xfail(strict=True) until
it is fixed.
"""

from __future__ import annotations

from typing import Any

import anyio
import anyio.to_thread
import pytest
from grpclib import GRPCError
from grpclib.const import Status

from osqueue_core import Broker
from osqueue_io import RemoteQueue
from osqueue_io._proto.osqueue.v1 import (
    ClaimBatchRequest,
    ClaimRequest,
    PurgeRequest,
    PushBatchRequest,
    RedriveRequest,
)
from osqueue_io.server import BrokerServer
from osqueue_io.server.codec import StrictProtoCodec
from osqueue_io.storage import open_store
from tests.io.conftest import wait_for_port

pytestmark = pytest.mark.anyio


def repeated(field_number: int, count: int) -> bytes:
    """``count`` empty strings (or bytes) in length-delimited field ``field_number``."""
    return bytes([field_number << 3 | 2, 0]) * count


@pytest.mark.parametrize(
    ("message_type", "field_number"),
    [
        (ClaimRequest, 3),  # queues: at most 64
        (ClaimBatchRequest, 2),  # queues
        (PushBatchRequest, 1),  # data: at most max_batch_ops
        (RedriveRequest, 1),  # job_ids
        (PurgeRequest, 1),  # job_ids
    ],
)
def test_the_codec_refuses_repeated_fields_beyond_their_limit(
    message_type: Any, field_number: int
) -> None:
    # 20,000 entries: far beyond any limit (64 queue names, 1000 batch items), and
    # still cheap enough for this test to run in well under a second either way.
    data = repeated(field_number, 20_000)
    with pytest.raises(GRPCError) as refused:
        StrictProtoCodec().decode(data, message_type)
    assert refused.value.status is Status.RESOURCE_EXHAUSTED


async def test_the_server_does_not_compute_stats_at_every_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = 0
    original = Broker.stats

    def counting(self: Broker) -> Any:
        nonlocal calls
        calls += 1
        return original(self)

    monkeypatch.setattr(Broker, "stats", counting)
    app = BrokerServer(open_store("memory://"), host="127.0.0.1", port=0)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(lambda: app.run(handle_signals=False))
        with anyio.fail_after(10):
            while app.address is None:  # noqa: ASYNC110 (no event to wait for)
                await anyio.sleep(0.01)
        host, port = app.address.rsplit(":", 1)
        await anyio.to_thread.run_sync(wait_for_port, host, int(port))
        async with RemoteQueue(app.address, bytes) as queue:
            await queue.push(b"warm-up")
            before = calls
            for i in range(50):
                await queue.push(b"x", queue=f"q{i}")
            during = calls - before
        app.stop()
    assert during < 10, f"Broker.stats() ran {during} times for 50 pushes nobody asked stats of"
