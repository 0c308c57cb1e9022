"""The broker's HTTP application: Prometheus metrics and the web dashboard.

:func:`create_app` builds one aiohttp application over a
:class:`~osqueue_io.http.monitor.Monitor` (a broker's, or a group member's):
``/metrics`` (with ``metrics``), the dashboard's pages and actions (with
``dashboard``), its static files. The caller may add middlewares (authentication:
:func:`~osqueue_io.http.access.required_access`
tells which routes only read and which change the queue); they run inside the
security headers and outside the error pages. TLS is the listener's business
(:class:`~osqueue_io.http.listener.HttpListener` takes an ``ssl_context``).

Every response forbids framing and inline scripts; requests are bounded (a 64 KiB body,
a 2 KiB query string); errors are pages with a clear status, never a traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Middleware

from osqueue_core import OsqueueError
from osqueue_io.http.access import read_route
from osqueue_io.http.csrf import FormGuard
from osqueue_io.http.dashboard import Dashboard, error_status
from osqueue_io.http.metrics import CONTENT_TYPE, broker_registry, render
from osqueue_io.http.monitor import Monitor
from osqueue_io.http.params import MAX_QUERY_LENGTH, BadRequest
from osqueue_io.storage import StorageError

log = logging.getLogger("osqueue.http")


#: The largest request body read (the dashboard's forms are a few hundred bytes).
MAX_BODY_BYTES = 64 << 10
STATIC = Path(__file__).parent / "static"

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


@web.middleware
async def _security_headers(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exception:
        exception.headers.update(SECURITY_HEADERS)
        raise
    response.headers.update(SECURITY_HEADERS)
    return response


def _error_pages(dashboard: Dashboard | None) -> Middleware:
    """Typed failures as pages (or plain text without a dashboard) with their status."""

    def answer(status: int, message: str) -> web.Response:
        if dashboard is not None:
            return dashboard.error_page(status, message)
        return web.Response(text=message + "\n", status=status)

    @web.middleware
    async def error_pages(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if len(request.query_string) > MAX_QUERY_LENGTH:
            return answer(414, f"the query string is longer than {MAX_QUERY_LENGTH} bytes")
        try:
            return await handler(request)
        except BadRequest as error:
            return answer(error.status, error.message)
        except OsqueueError as error:
            return answer(error_status(error), f"{type(error).__name__}: {error}")
        except StorageError as error:
            log.warning("dashboard storage read failed: %s", error)
            return answer(502, f"storage failed: {str(error)[:300]}")

    return error_pages


def create_app(
    monitor: Monitor,
    *,
    metrics: bool = True,
    dashboard: bool = True,
    middlewares: Sequence[Middleware] = (),
    guard: FormGuard | None = None,
) -> web.Application:
    """The HTTP application over ``monitor`` (see the module docstring).

    ``middlewares`` come from the caller (e.g. authentication) and see every request
    first; ``guard`` issues and checks the dashboard's form token (default: a token
    drawn for this application).
    """
    if not (metrics or dashboard):
        raise ValueError("an HTTP application serves metrics, the dashboard, or both")
    board = Dashboard(monitor, guard) if dashboard else None
    app = web.Application(
        middlewares=[_security_headers, *middlewares, _error_pages(board)],
        client_max_size=MAX_BODY_BYTES,
    )
    routes: list[web.RouteDef] = []
    if metrics:
        registry = broker_registry(monitor)

        async def scrape(request: web.Request) -> web.StreamResponse:
            """The Prometheus text exposition of the broker's metrics."""
            return web.Response(body=render(registry), headers={"Content-Type": CONTENT_TYPE})

        routes.append(read_route("/metrics", scrape, name="metrics"))
    if board is not None:
        routes.extend(board.routes())

        async def static(request: web.Request) -> web.StreamResponse:
            """The dashboard's stylesheet and chart script (fixed names only)."""
            name = request.match_info["name"]
            if name not in _STATIC_FILES:
                raise web.HTTPNotFound()
            return web.FileResponse(
                STATIC / name,
                headers={
                    "Content-Type": _STATIC_FILES[name],
                    "Cache-Control": "max-age=300",
                },
            )

        routes.append(read_route("/static/{name}", static))
    app.add_routes(routes)
    return app


_STATIC_FILES = {"style.css": "text/css", "chart.js": "text/javascript"}
