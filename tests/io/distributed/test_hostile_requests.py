"""A broker process against requests built to hurt it: huge ids, huge messages, floods.

Each test stands for an attack that once worked; each checks that the attacker gets a
clear status at once and that everyone else is still served.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable
from pathlib import Path

import anyio
import grpc
import h2.config
import h2.connection
import h2.events
import pytest
from grpclib.const import Status
from grpclib.metadata import encode_grpc_message

from osqueue_core import Overloaded, PayloadTooLarge
from osqueue_io._proto.osqueue.v1 import (
    CompleteRequest,
    FailRequest,
    HeartbeatRequest,
    PushRequest,
    PushResponse,
    StatsRequest,
)
from osqueue_io.status import ERROR_KEY, MAX_STATUS_MESSAGE_BYTES
from osqueue_io.sync import Worker
from osqueue_io.worker import Worker as AsyncWorker

from .conftest import BrokerProcess, Storage

StartBroker = Callable[..., BrokerProcess]
MiB = 1024 * 1024
SERVICE = "/osqueue.v1.QueueService/"


def frame(message: bytes, *, declared: int | None = None, compressed: bool = False) -> bytes:
    """``message`` as gRPC sends it: a compression flag, a 4-byte length, the bytes."""
    length = len(message) if declared is None else declared
    return bytes([compressed]) + length.to_bytes(4, "big") + message


class RawConnection:
    """An HTTP/2 connection to a broker, driven frame by frame (the h2 library), for
    calls no gRPC client makes: a length prefix without its body, a call held half-sent.

    Calls on one connection reach the broker in the order they were started, so a call
    answered here was handled after every call started before it. Reads give up after
    ``timeout`` seconds: a hang guard, not a measurement.
    """

    def __init__(self, port: int, timeout: float = 30.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        self.h2 = h2.connection.H2Connection(config)
        self.h2.initiate_connection()
        self._flush()
        self._answers: dict[int, dict[str, str]] = {}
        self._ended: set[int] = set()

    def close(self) -> None:
        self.sock.close()

    def start(self, method: str, data: bytes = b"", *, end: bool = True) -> int:
        """Open a call of ``method``, send ``data`` (at most 64 KiB), end the request if
        ``end``; returns the stream id."""
        stream_id: int = self.h2.get_next_available_stream_id()
        headers = [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", SERVICE + method),
            (":authority", "127.0.0.1"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]
        self.h2.send_headers(stream_id, headers, end_stream=end and not data)
        if data:
            self.h2.send_data(stream_id, data, end_stream=end)
        self._flush()
        return stream_id

    def send(self, stream_id: int, data: bytes, *, end: bool = True) -> None:
        self.h2.send_data(stream_id, data, end_stream=end)
        self._flush()

    def reset(self, stream_id: int) -> None:
        self.h2.reset_stream(stream_id)
        self._flush()

    def answer(self, stream_id: int) -> dict[str, str]:
        """The response headers and trailers of ``stream_id``, once it has ended."""
        while stream_id not in self._ended:
            data = self.sock.recv(1 << 16)
            assert data, "the broker closed the connection"
            for event in self.h2.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
                    headers = self._answers.setdefault(event.stream_id, {})
                    headers.update((str(k), str(v)) for k, v in event.headers or [])
                elif isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
                    self._ended.add(event.stream_id)
                elif isinstance(event, h2.events.DataReceived):
                    assert event.stream_id is not None
                    self.h2.acknowledge_received_data(
                        event.flow_controlled_length or 0, event.stream_id
                    )
            self._flush()
        return self._answers.get(stream_id, {})

    def _flush(self) -> None:
        self.sock.sendall(self.h2.data_to_send())


def status_of(answer: dict[str, str]) -> Status:
    return Status(int(answer["grpc-status"]))


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


def test_a_declared_length_is_refused_before_its_body(
    local_storage: Storage, start_broker: StartBroker
) -> None:
    # A broker that waited for the body before checking the length (as grpclib's own
    # reading does) would never answer: no body comes.
    broker = start_broker(local_storage.data)
    raw = RawConnection(broker.port)
    try:
        huge = raw.start("Push", frame(b"", declared=2**32 - 1), end=False)
        answer = raw.answer(huge)
        assert status_of(answer) is Status.RESOURCE_EXHAUSTED
        assert answer[ERROR_KEY] == "PayloadTooLarge"
        assert "4294967295 bytes is over the broker's limit" in answer["grpc-message"]

        # Framing that ends too soon, or is compressed (the broker offers no encoding).
        framings = {
            b"": (Status.INVALID_ARGUMENT, "the call carried no PushRequest"),
            b"\x00\x00\x00": (Status.INVALID_ARGUMENT, "ended inside its length prefix"),
            frame(b"abc", declared=10): (Status.INVALID_ARGUMENT, "before the 10 bytes"),
            frame(bytes(PushRequest(data=b"x")), compressed=True): (
                Status.UNIMPLEMENTED,
                "compressed messages are not supported",
            ),
        }
        for data, (status, message) in framings.items():
            answer = raw.answer(raw.start("Push", data))
            assert (status_of(answer), message in answer.get("grpc-message", "")) == (
                status,
                True,
            ), (data, answer)
        # The connection and the broker are fine, and nothing was pushed.
        stats = raw.answer(raw.start("Stats", frame(bytes(StatsRequest()))))
        assert status_of(stats) is Status.OK
    finally:
        raw.close()
    with Worker(broker.address) as worker:
        assert worker.stats().ready == 0
    assert broker.terminate() == 0, broker.text


def peak_rss_bytes(pid: int) -> int:
    """The process's peak resident set size so far (VmHWM)."""
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmHWM:\s+(\d+) kB$", status, re.MULTILINE)
    assert match is not None, status
    return int(match.group(1)) * 1024


@pytest.mark.anyio
async def test_huge_requests_are_refused_without_being_buffered(
    local_storage: Storage, start_broker: StartBroker
) -> None:
    broker = start_broker(local_storage.data)
    request_bytes = 60 * 1000 * 1000
    async with AsyncWorker(broker.address) as warm_up:
        await warm_up.push(b"x" * 1000)  # the first push's allocations come before the baseline
    baseline = peak_rss_bytes(broker.process.pid)
    payload = b"x" * request_bytes
    refusals: list[Exception] = []

    async def push_huge() -> None:
        async with AsyncWorker(broker.address, timeout=60) as worker:  # a hang guard
            try:
                await worker.push(payload)
            except PayloadTooLarge as error:
                refusals.append(error)

    async with anyio.create_task_group() as pushers:
        for _ in range(8):  # each on a connection of its own
            pushers.start_soon(push_huge)
    assert len(refusals) == 8
    assert all("is over the broker's limit" in str(error) for error in refusals)
    growth = peak_rss_bytes(broker.process.pid) - baseline
    # Buffering even one of them would add 60 MB; unread bytes are bounded by HTTP/2
    # flow-control windows (4 MiB per connection).
    assert growth < request_bytes // 3, f"the broker's peak RSS grew by {growth} bytes"
    async with AsyncWorker(broker.address) as worker:
        assert (await worker.stats()).ready == 1
    assert broker.terminate() == 0, broker.text


@pytest.mark.anyio
async def test_requests_beyond_the_bytes_in_flight_are_overloaded_not_too_large(
    local_storage: Storage, start_broker: StartBroker
) -> None:
    broker = start_broker(
        local_storage.data, "--max-message-bytes", "6MiB", "--max-request-bytes-in-flight", "10MiB"
    )
    five_mib_batch = [b"x" * MiB] * 5  # under the message limit, over a 4 MiB HTTP/2 window
    raw = RawConnection(broker.port)
    try:
        # A call that declares a 6 MiB request and sends none of it: 6 MiB reserved.
        held = raw.start("PushBatch", frame(b"", declared=6 * MiB), end=False)
        # Answered after the held call was read up to its body (same connection).
        assert status_of(raw.answer(raw.start("Stats", frame(b"")))) is Status.OK

        async with AsyncWorker(broker.address) as worker:
            # 6 MiB + 5 MiB > 10 MiB: load, retryable, though this client was still
            # sending its request when it was refused.
            with pytest.raises(Overloaded) as overloaded:
                await worker.push_batch(five_mib_batch)
            assert overloaded.value.retryable
            assert "of at most 10485760" in str(overloaded.value)
            # Over the message limit: no retry would help.
            with pytest.raises(PayloadTooLarge) as too_large:
                await worker.push_batch([b"x" * MiB] * 7)
            assert not too_large.value.retryable
            assert await worker.push(b"small")  # what fits is served meanwhile

            # The held call ends: its reservation goes with it.
            raw.reset(held)
            assert status_of(raw.answer(raw.start("Stats", frame(b"")))) is Status.OK
            assert len(await worker.push_batch(five_mib_batch)) == 5
    finally:
        raw.close()
    assert broker.terminate() == 0, broker.text


@pytest.mark.anyio
async def test_calls_beyond_the_concurrency_limit_are_overloaded(
    local_storage: Storage, start_broker: StartBroker
) -> None:
    broker = start_broker(local_storage.data, "--max-concurrent-calls", "1")
    raw = RawConnection(broker.port)
    try:
        held = raw.start("Stats", end=False)  # admitted, then waits for its request
        refused = raw.answer(raw.start("Stats", frame(b"")))
        assert (status_of(refused), refused[ERROR_KEY]) == (
            Status.RESOURCE_EXHAUSTED,
            "Overloaded",
        )
        async with AsyncWorker(broker.address) as worker:
            with pytest.raises(Overloaded) as overloaded:
                await worker.stats()
            assert overloaded.value.retryable
            assert "as many as it allows at once" in str(overloaded.value)

            raw.send(held, frame(b""))
            assert status_of(raw.answer(held)) is Status.OK
            assert (await worker.stats()).ready == 0  # the slot is free again
    finally:
        raw.close()
    assert broker.terminate() == 0, broker.text
