"""Asking a broker's health the way load balancers do: grpclib's own health client
(``grpclib.health``, on the ``protobuf`` runtime the tests have), not osqueue's code."""

from __future__ import annotations

import ssl

from grpclib.client import Channel
from grpclib.health.v1.health_grpc import HealthStub  # type: ignore[import-untyped]
from grpclib.health.v1.health_pb2 import HealthCheckRequest  # type: ignore[import-untyped]


async def health_status(
    port: int, service: str = "", *, ssl_context: ssl.SSLContext | None = None
) -> str:
    """The status ``grpc.health.v1.Health/Check`` reports for ``service`` on
    ``127.0.0.1:port``, by name (``SERVING``, ``NOT_SERVING``...)."""
    channel = Channel("127.0.0.1", port, ssl=ssl_context)
    try:
        reply = await HealthStub(channel).Check(HealthCheckRequest(service=service), timeout=10)
        name: str = reply.ServingStatus.Name(reply.status)
        return name
    finally:
        channel.close()
