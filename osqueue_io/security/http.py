"""Bearer tokens on the broker's HTTP listeners (dashboard, metrics): an aiohttp
middleware.

``web.Application(middlewares=[token_middleware(tokens)])`` refuses a request without
a valid ``Authorization: Bearer <token>`` header with 401 (and ``WWW-Authenticate:
Bearer``), and one whose token's role is too low with 403, before its handler runs: a
refused request changes nothing. By default reading (``GET``, ``HEAD``, ``OPTIONS``)
needs the ``read`` role and anything else ``admin``; ``required`` decides otherwise,
per request (None: no token needed, e.g. a liveness path). With no tokens configured,
every request passes. Tokens are matched as on gRPC
(:meth:`~osqueue_io.security.tokens.Tokens.match`) and never logged or echoed.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from osqueue_io.security.tokens import Role, Tokens, bearer_token

#: Methods that only read: the ``read`` role is enough for them by default.
READING_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def reading_or_admin(request: web.Request) -> Role | None:
    """The default policy: ``read`` for reading methods, ``admin`` for the rest."""
    return Role.READ if request.method in READING_METHODS else Role.ADMIN


def token_middleware(
    tokens: Tokens, required: Callable[[web.Request], Role | None] = reading_or_admin
) -> Middleware:
    """An aiohttp middleware enforcing ``tokens`` (see the module docstring)."""

    @web.middleware
    async def check_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not tokens.enabled:
            return await handler(request)
        needed = required(request)
        if needed is None:
            return await handler(request)
        values = request.headers.getall("Authorization", [])
        token = tokens.match(bearer_token(values[0])) if len(values) == 1 else None
        if token is None:
            raise web.HTTPUnauthorized(
                text="this needs a bearer token (Authorization: Bearer <token>)\n",
                headers={"WWW-Authenticate": 'Bearer realm="osqueue"'},
            )
        if token.role < needed:
            raise web.HTTPForbidden(
                text=f"this needs a token with the {needed.label} role; yours has the "
                f"{token.role.label} role\n"
            )
        return await handler(request)

    return check_token


def route_role(request: web.Request) -> Role | None:
    """The policy of the broker's own HTTP listeners: ``admin`` for the routes marked as
    changing the queue (:mod:`osqueue_io.http.access`), ``read`` for the rest."""
    # Imported here: osqueue_io.http needs the broker's server, which needs this module.
    from osqueue_io.http.access import ADMIN, required_access

    return Role.ADMIN if required_access(request) is ADMIN else Role.READ
