"""``python -m benchmarks.noop_server``: ``osqueue.v1.QueueService`` answering ``Push``
and ``PushBatch`` at once, doing nothing. The gRPC ceiling of the benchmarks: the same
client, messages and HTTP/2 stack as the broker, without the broker.

Logs ``listening on 127.0.0.1:PORT`` like the broker (``--data`` is accepted and ignored,
so :class:`benchmarks.broker.BrokerProcess` starts it the same way).
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys

import anyio
from grpclib.server import Server

from osqueue_core import BrokerConfig
from osqueue_io._proto.osqueue import v1 as pb
from osqueue_io.http2 import limit_closed_streams
from osqueue_io.server import StrictProtoCodec
from osqueue_io.server.cli import exit_process, parse_listen
from osqueue_io.server.codec import default_max_message_bytes

log = logging.getLogger("benchmarks.noop_server")
_JOB_ID = "000000000000-1"


class NoopQueueService(pb.QueueServiceBase):
    async def push(self, message: pb.PushRequest) -> pb.PushResponse:
        return pb.PushResponse(job_id=_JOB_ID)

    async def push_batch(self, message: pb.PushBatchRequest) -> pb.PushBatchResponse:
        count = len(message.data) or len(message.items)
        return pb.PushBatchResponse(job_ids=[_JOB_ID] * count)


async def serve(host: str, port: int) -> None:
    limit_closed_streams()
    # The broker's own codec and settings, so only the work behind the RPC differs.
    config = BrokerConfig()
    codec = StrictProtoCodec(default_max_message_bytes(config), config.max_batch_ops)
    server = Server([NoopQueueService()], codec=codec, status_details_codec=None)
    # proto=IPPROTO_TCP, as the broker's bind() gets it from getaddrinfo: asyncio sets
    # TCP_NODELAY only on sockets that say they are TCP, and without it every reply
    # waits ~40 ms for a delayed ACK (Nagle).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.setblocking(False)
    await server.start(sock=sock)
    log.info("no-op server listening on %s:%d", host, sock.getsockname()[1])
    await server.wait_closed()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.noop_server")
    parser.add_argument("--listen", type=parse_listen, default="127.0.0.1:0")
    parser.add_argument("--data", default="")
    args = parser.parse_args()
    logging.basicConfig(
        level="INFO", format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    host, port = args.listen
    anyio.run(serve, host, port, backend="asyncio")
    return 0


if __name__ == "__main__":
    exit_process(main())
