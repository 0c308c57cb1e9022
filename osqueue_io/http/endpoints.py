"""The broker process's HTTP listeners, as the server starts and stops them.

``--metrics-listen`` serves ``/metrics`` alone; ``--http-listen`` serves the dashboard
and ``/metrics`` too. Both are optional and independent of the gRPC listener: they
start before the takeover (a standby's metrics can be scraped while it watches) and
stop after the gRPC server has drained.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Sequence

from aiohttp.typedefs import Middleware

from osqueue_io.http.app import create_app
from osqueue_io.http.listener import HttpListener
from osqueue_io.http.monitor import Monitor

log = logging.getLogger("osqueue.http")

Address = tuple[str, int]


class HttpEndpoints:
    """The listeners asked for (none, one or both), over ``monitor``."""

    def __init__(
        self,
        monitor: Monitor,
        *,
        metrics_listen: Address | None = None,
        http_listen: Address | None = None,
        ssl_context: ssl.SSLContext | None = None,
        middlewares: Sequence[Middleware] = (),
    ) -> None:
        self.monitor = monitor
        self.listeners: dict[str, HttpListener] = {}
        if metrics_listen is not None:
            app = create_app(monitor, dashboard=False, middlewares=middlewares)
            host, port = metrics_listen
            self.listeners["metrics"] = HttpListener(app, host, port, ssl_context=ssl_context)
        if http_listen is not None:
            app = create_app(monitor, middlewares=middlewares)
            host, port = http_listen
            self.listeners["dashboard"] = HttpListener(app, host, port, ssl_context=ssl_context)

    async def start(self) -> None:
        """Bind and serve every listener; OSError (the others closed) if one cannot."""
        started: list[HttpListener] = []
        try:
            for name, listener in self.listeners.items():
                await listener.start()
                started.append(listener)
                path = "/metrics" if name == "metrics" else "/"
                log.info(
                    "%s at %s://%s:%d%s",
                    name,
                    listener.scheme,
                    listener.host,
                    listener.port,
                    path,
                )
        except BaseException:
            for listener in started:
                await listener.stop()
            raise

    async def stop(self) -> None:
        for listener in self.listeners.values():
            await listener.stop()
