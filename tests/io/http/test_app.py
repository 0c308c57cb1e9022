"""The HTTP application in process, over a real broker runtime on a memory store and a
real aiohttp server on 127.0.0.1: the form guard, the route marks an auth middleware
relies on, bounded parameters, and counters carried across runtimes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer
from aiohttp.typedefs import Handler

from osqueue_core import BrokerConfig, Push
from osqueue_io.http import ADMIN, READ, BrokerMonitor, FormGuard, access_of, create_app
from osqueue_io.http.access import required_access
from osqueue_io.runtime import BrokerRuntime
from osqueue_io.storage import open_store

pytestmark = pytest.mark.anyio

TOKEN = "test-token"


@pytest.fixture
async def monitor() -> AsyncIterator[BrokerMonitor]:
    store = open_store("memory://")
    config = BrokerConfig()
    runtime = BrokerRuntime(store, config, identity="b1")
    watched = BrokerMonitor(store, config, identity="b1", address="127.0.0.1:1")
    watched.attach(runtime)
    async with runtime:
        yield watched
    await store.aclose()


async def serve(app: web.Application) -> TestServer:
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server


async def test_every_route_is_marked_and_only_posts_change_the_queue(
    monitor: BrokerMonitor,
) -> None:
    app = create_app(monitor)
    marks = {(r.method, r.resource.canonical): access_of(r) for r in app.router.routes()}
    assert None not in marks.values(), marks
    admin = {key for key, access in marks.items() if access is ADMIN}
    assert admin == {("POST", "/dead/redrive"), ("POST", "/dead/purge")}
    assert all(method in ("GET", "HEAD") for (method, _), a in marks.items() if a is READ)


async def test_a_caller_middleware_sees_what_each_request_needs(monitor: BrokerMonitor) -> None:
    seen: list[tuple[str, str]] = []

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        access = required_access(request)
        seen.append((request.path, access.value))
        if access is ADMIN and request.headers.get("Authorization") != "Bearer admin":
            raise web.HTTPUnauthorized(text="admin only")
        return await handler(request)

    server = await serve(create_app(monitor, middlewares=[guard], guard=FormGuard(TOKEN)))
    try:
        async with ClientSession() as session:
            async with session.get(server.make_url("/metrics")) as response:
                assert response.status == 200
            url = server.make_url("/dead/redrive")
            async with session.post(url, data={"csrf": TOKEN, "queue": "q"}) as response:
                assert response.status == 401
                assert response.headers["X-Frame-Options"] == "DENY"
            async with session.get(server.make_url("/nowhere")) as response:
                assert response.status == 404
    finally:
        await server.close()
    assert seen == [("/metrics", "read"), ("/dead/redrive", "admin"), ("/nowhere", "read")]


async def test_a_post_needs_the_form_token_and_the_same_origin(monitor: BrokerMonitor) -> None:
    runtime = monitor.runtime
    assert runtime is not None
    server = await serve(create_app(monitor, guard=FormGuard(TOKEN)))
    own = f"http://127.0.0.1:{server.port}"
    url = server.make_url("/dead/redrive")
    try:
        async with ClientSession() as session:
            for data, headers, status, says in [
                ({"queue": "q"}, {"Origin": own}, 403, "form token"),
                ({"csrf": "guess", "queue": "q"}, {"Origin": own}, 403, "form token"),
                ({"csrf": TOKEN, "queue": "q"}, {"Origin": "http://evil.test"}, 403, "origin"),
                ({"csrf": TOKEN, "queue": "q"}, {"Referer": "http://evil.test/x"}, 403, "site"),
                ({"csrf": TOKEN}, {"Origin": own}, 400, "job_id is required"),
                ({"csrf": TOKEN, "queue": "a b"}, {"Origin": own}, 400, "queue"),
            ]:
                async with session.post(
                    url, data=data, headers=headers, allow_redirects=False
                ) as response:
                    body = await response.text()
                    assert response.status == status, (data, headers, body)
                    assert says in body
            # Accepted: the redrive goes through the runtime (nothing dead: none moved).
            async with session.post(
                url,
                data={"csrf": TOKEN, "queue": "q", "back": "q"},
                headers={"Origin": own},
                allow_redirects=False,
            ) as response:
                assert response.status == 303
                assert response.headers["Location"] == "/dead?queue=q&redriven=0"
            async with session.post(
                server.make_url("/dead/purge"),
                data={"csrf": TOKEN, "job_id": "nope"},
                allow_redirects=False,
            ) as response:
                assert response.status == 404  # JobNotFound, from the core
    finally:
        await server.close()


async def test_responses_forbid_framing_and_inline_script(monitor: BrokerMonitor) -> None:
    server = await serve(create_app(monitor))
    try:
        async with ClientSession() as session:
            for path in ("/", "/jobs?status=bad", "/static/chart.js", "/metrics"):
                async with session.get(server.make_url(path)) as response:
                    policy = response.headers["Content-Security-Policy"]
                    assert "frame-ancestors 'none'" in policy
                    assert "script-src 'self'" in policy
                    assert "unsafe-inline" not in policy
            async with session.get(server.make_url("/static/../app.py")) as response:
                assert response.status == 404
            big = "x" * (100 << 10)
            async with session.post(server.make_url("/dead/purge"), data=big) as response:
                assert response.status == 413
    finally:
        await server.close()


async def test_the_metrics_only_app_serves_no_dashboard(monitor: BrokerMonitor) -> None:
    server = await serve(create_app(monitor, dashboard=False))
    try:
        async with ClientSession() as session:
            async with session.get(server.make_url("/")) as response:
                assert response.status == 404
            async with session.get(server.make_url("/metrics")) as response:
                assert "osqueue_takeovers_total 1.0" in await response.text()
    finally:
        await server.close()
    with pytest.raises(ValueError, match="serves"):
        create_app(monitor, metrics=False, dashboard=False)


async def test_counters_carry_over_from_one_runtime_to_the_next() -> None:
    store = open_store("memory://")
    config = BrokerConfig()
    monitor = BrokerMonitor(store, config, identity="b", address=None)
    try:
        for round_ in range(2):
            runtime = BrokerRuntime(store, config, identity="b")
            monitor.attach(runtime)
            async with runtime:
                await runtime.request(Push(runtime.new_request_id(), b"x"))
                counters = monitor.counters(monitor.runtime_stats())
                assert counters.values["takeovers"] == round_ + 1
                # Each earlier runtime also committed its release (no request in it).
                assert counters.commit_operations.total == round_ + 1
                assert counters.commit_operations.count == 2 * round_ + 1
            monitor.detach(runtime)
            assert monitor.stats() is None
        total = monitor.counters()
        assert total.values["takeovers"] == 2
        assert total.commit_operations.total == 2
    finally:
        await store.aclose()
