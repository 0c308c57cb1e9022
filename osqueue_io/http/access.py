"""Which routes read and which change the queue, for whoever guards them.

Every route of the HTTP layer is marked :data:`READ` (pages, JSON, metrics) or
:data:`ADMIN` (the POST endpoints that redrive or purge dead letters) when it is added
(:func:`read_route`, :func:`admin_route`). A middleware given to
:func:`~osqueue_io.http.app.create_app` (authentication, say) asks
:func:`required_access` which one a request needs; a request that matched no route
(a 404 or 405 to come) needs :data:`READ`.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Access(enum.Enum):
    """What a route does to the queue."""

    #: Looks only: pages, JSON, ``/metrics``, static files.
    READ = "read"
    #: Changes the queue (redrive, purge): always a POST.
    ADMIN = "admin"


READ = Access.READ
ADMIN = Access.ADMIN

_ACCESS_ATTRIBUTE = "__osqueue_access__"


def _marked(handler: Handler, access: Access) -> Handler:
    async def guarded(request: web.Request) -> web.StreamResponse:
        return await handler(request)

    guarded.__name__ = getattr(handler, "__name__", "handler")
    guarded.__doc__ = handler.__doc__
    setattr(guarded, _ACCESS_ATTRIBUTE, access)
    return guarded


def read_route(path: str, handler: Handler, *, name: str | None = None) -> web.RouteDef:
    """A GET route that only reads."""
    return web.get(path, _marked(handler, READ), name=name, allow_head=True)


def admin_route(path: str, handler: Handler, *, name: str | None = None) -> web.RouteDef:
    """A POST route that changes the queue."""
    return web.post(path, _marked(handler, ADMIN), name=name)


def required_access(request: web.Request) -> Access:
    """What ``request`` needs: the access of the route it matched (:data:`READ` when it
    matched none). Call it from a middleware."""
    handler = request.match_info.handler
    access = getattr(handler, _ACCESS_ATTRIBUTE, READ)
    return access if isinstance(access, Access) else READ


def access_of(route: web.AbstractRoute) -> Access | None:
    """The access a registered route was marked with (None: not one of ours, e.g. a
    route a caller added)."""
    access = getattr(route.handler, _ACCESS_ATTRIBUTE, None)
    return access if isinstance(access, Access) else None
