"""The standard gRPC health service (``grpc.health.v1.Health``) of a broker process.

Load balancers and orchestrators ask it whether to send this broker traffic. It answers
SERVING while the broker owns its queue and serves calls (phase RUNNING, not draining),
and NOT_SERVING otherwise: a standby watching the owner, a broker taking over, stopping,
or failed (replaced by another). Both ``""`` (the server as a whole) and
``osqueue.v1.QueueService`` have that status; any other service name is NOT_FOUND
(``Check``) or SERVICE_UNKNOWN (``Watch``), as the standard says.

:class:`~osqueue_io.server.app.BrokerServer` sets the status as the broker's life goes
(:meth:`BrokerHealth.set_serving`) and, when it drains, ends every ``Watch`` after
telling it NOT_SERVING (:meth:`BrokerHealth.close`), so a watching client never holds
the drain up. Health calls need no token (docs/security.md): they reveal nothing but
the status. Served on the broker's own gRPC port, over TLS when the broker has it.

The messages are generated from ``proto/grpc/health/v1/health.proto`` like osqueue's
own (grpclib's ``grpclib.health`` needs the ``protobuf`` runtime, which osqueue does
not depend on), so they go through the broker's strict codec and request bounds too.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from grpclib import GRPCError
from grpclib.const import Status

from osqueue_io._proto.grpc.health.v1 import (
    HealthBase,
    HealthCheckRequest,
    HealthCheckResponse,
    HealthCheckResponseServingStatus,
)

#: The service names with a status: the whole server, and the queue service.
SERVICES = frozenset({"", "osqueue.v1.QueueService"})

SERVING = HealthCheckResponseServingStatus.SERVING
NOT_SERVING = HealthCheckResponseServingStatus.NOT_SERVING


class BrokerHealth(HealthBase):
    """The health of one broker process: NOT_SERVING until :meth:`set_serving`."""

    def __init__(self) -> None:
        self._status = NOT_SERVING
        self._closed = False
        # Replaced at every change: each watcher waits on the event of the status it
        # last sent. (asyncio, as the rest of the server: grpclib needs it.)
        self._changed = asyncio.Event()

    @property
    def status(self) -> HealthCheckResponseServingStatus:
        return self._status

    def set_serving(self, serving: bool) -> None:
        """Report SERVING (or NOT_SERVING) from now on, to checks and watchers."""
        status = SERVING if serving and not self._closed else NOT_SERVING
        if status != self._status:
            self._status = status
            self._wake()

    def close(self) -> None:
        """NOT_SERVING for good; every ``Watch`` sends it and ends."""
        self._closed = True
        self._status = NOT_SERVING
        self._wake()

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def check(self, message: HealthCheckRequest) -> HealthCheckResponse:
        if message.service not in SERVICES:
            raise GRPCError(Status.NOT_FOUND, "unknown service")
        return HealthCheckResponse(status=self._status)

    async def watch(self, message: HealthCheckRequest) -> AsyncIterator[HealthCheckResponse]:
        known = message.service in SERVICES
        sent = None
        while True:
            changed = self._changed
            # An unknown service stays unknown; the standard keeps its call open anyway.
            status = self._status if known else HealthCheckResponseServingStatus.SERVICE_UNKNOWN
            if status != sent:
                sent = status
                yield HealthCheckResponse(status=status)
            if self._closed:
                return
            await changed.wait()
