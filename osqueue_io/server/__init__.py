"""The gRPC broker: ``python -m osqueue_io.server``, or :class:`BrokerServer` in code.

Files, one concept each: ``cli`` (flags), ``app`` (listen, serve, drain, stop),
``service`` (RPCs to core commands), ``admission`` (which calls get in: during a drain,
and within the limits on concurrent calls and request bytes in flight), ``reader``
(reading each request within those limits, from its length prefix), ``codec`` (strict
decoding of requests); ``osqueue_io.status`` maps typed errors to gRPC statuses and
trailers, and back. The wire protocol is described in docs/protocol.md.
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
