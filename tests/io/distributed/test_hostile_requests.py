"""A broker process against requests built to hurt it: huge ids, huge messages, floods.

Each test stands for an attack that once worked; each checks that the attacker gets a
clear status at once and that everyone else is still served.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest
from grpclib.metadata import encode_grpc_message

from osqueue_io._proto.osqueue.v1 import (
    CompleteRequest,
    FailRequest,
    HeartbeatRequest,
    PushRequest,
    PushResponse,
)
from osqueue_io.status import MAX_STATUS_MESSAGE_BYTES
from osqueue_io.sync import Worker

from .conftest import BrokerProcess, Storage

StartBroker = Callable[..., BrokerProcess]
MiB = 1024 * 1024
SERVICE = "/osqueue.v1.QueueService/"


def test_a_huge_id_gets_a_short_status_and_stalls_no_one(
    local_storage: Storage, start_broker: StartBroker
) -> None:
    # Echoed whole into a status message, a 10 MB id once kept the broker's CPU busy
    # for over ten minutes (header compression is quadratic in a value's length), and
    # every other client waited.
    broker = start_broker(local_storage.data)
    with Worker(broker.address, worker_id="holder") as holder:
        held = holder.push(b"held")
        assert holder.claim() is not None
    huge = "i" * (3 * MiB)
    requests = [
        ("Heartbeat", HeartbeatRequest(job_id=huge, worker_id=huge)),
        ("Complete", CompleteRequest(job_id=huge, worker_id=huge)),
        ("Fail", FailRequest(job_id=huge, worker_id=huge, error="gave up")),
        ("Heartbeat", HeartbeatRequest(job_id=held, worker_id=huge)),  # not the holder
        ("Complete", CompleteRequest(job_id=held, worker_id=huge)),
        ("Fail", FailRequest(job_id=held, worker_id=huge)),
    ]
    with (
        grpc.insecure_channel(broker.address) as attacker,
        grpc.insecure_channel(broker.address) as bystander,
    ):
        push = bystander.unary_unary(SERVICE + "Push")
        for method, request in requests:
            with pytest.raises(grpc.RpcError) as refused:
                # The timeout is a hang guard: an echoed id takes many minutes.
                attacker.unary_unary(SERVICE + method)(bytes(request), timeout=60)
            assert refused.value.code() in (
                grpc.StatusCode.INVALID_ARGUMENT,
                grpc.StatusCode.NOT_FOUND,
                grpc.StatusCode.FAILED_PRECONDITION,
            ), (method, refused.value)
            details = refused.value.details()
            assert len(encode_grpc_message(details)) <= MAX_STATUS_MESSAGE_BYTES
            # The next client is answered right after (a hang guard again).
            reply = PushResponse.parse(push(bytes(PushRequest(data=b"x")), timeout=10))
            assert reply.job_id
    assert broker.terminate() == 0, broker.text
