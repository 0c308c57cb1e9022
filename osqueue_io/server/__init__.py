"""The gRPC broker: ``python -m osqueue_io.server``, or :class:`BrokerServer` in code.

Files, one concept each: ``cli`` (flags), ``app`` (listen, serve, drain, stop),
``service`` (RPCs to core commands), ``status`` (typed errors to gRPC statuses and
trailers, and back), ``admission`` (which calls get in during a drain), ``codec`` (strict
decoding of requests). The wire protocol is described in docs/protocol.md.
"""

from osqueue_io.server.app import EXIT_FAILED, EXIT_OK, EXIT_USAGE, BrokerServer
from osqueue_io.server.cli import main
from osqueue_io.server.codec import StrictProtoCodec
from osqueue_io.server.service import QueueService

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "BrokerServer",
    "QueueService",
    "StrictProtoCodec",
    "main",
]
