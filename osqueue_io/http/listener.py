"""One HTTP listener of the broker process: an aiohttp application on ``host:port``.

:meth:`HttpListener.start` binds (port 0 picks a free port: :attr:`port` tells which),
:meth:`HttpListener.stop` closes it. The broker starts its listeners before it takes
over (so a standby's metrics can be scraped) and stops them after its gRPC server.
"""

from __future__ import annotations

import ssl

from aiohttp import web


class HttpListener:
    """Serves ``app`` on ``host:port`` (TLS with ``ssl_context``)."""

    def __init__(
        self,
        app: web.Application,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
        shutdown_timeout: float = 5.0,
    ) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self._runner = web.AppRunner(
            app, access_log=None, shutdown_timeout=shutdown_timeout, handle_signals=False
        )

    @property
    def scheme(self) -> str:
        return "https" if self.ssl_context is not None else "http"

    async def start(self) -> None:
        """Bind and serve. Raises OSError if the address cannot be bound."""
        await self._runner.setup()
        site = web.TCPSite(
            self._runner, self.host, self.port, ssl_context=self.ssl_context, reuse_address=True
        )
        try:
            await site.start()
        except BaseException:
            await self._runner.cleanup()
            raise
        for address in self._runner.addresses:
            if isinstance(address, tuple) and len(address) >= 2:
                self.port = int(address[1])
                break

    async def stop(self) -> None:
        await self._runner.cleanup()
