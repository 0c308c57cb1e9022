"""The token middleware on a real aiohttp server on 127.0.0.1, over TLS."""

from __future__ import annotations

import secrets
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from osqueue_io.security import Role, Token, Tokens, client_context, server_context
from osqueue_io.security.http import token_middleware
from tests.io.security.certs import make_certificates

pytestmark = pytest.mark.anyio

READ = secrets.token_urlsafe(24)
ADMIN = secrets.token_urlsafe(24)
WRONG = secrets.token_urlsafe(24)


async def serve(
    tokens: Tokens, context: ssl.SSLContext | None, changed: list[str]
) -> AsyncIterator[str]:
    async def metrics(request: web.Request) -> web.Response:
        return web.Response(text="osqueue_ready 0\n")

    async def redrive(request: web.Request) -> web.Response:
        changed.append("redriven")
        return web.Response(text="ok\n")

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    def required(request: web.Request) -> Role | None:
        if request.path == "/healthz":
            return None
        return Role.READ if request.method == "GET" else Role.ADMIN

    app = web.Application(middlewares=[token_middleware(tokens, required)])
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/redrive", redrive)
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"{'https' if context else 'http'}://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def https(tmp_path: Path) -> AsyncIterator[tuple[str, ssl.SSLContext, list[str]]]:
    certificates = make_certificates(tmp_path)
    tokens = Tokens([Token(Role.READ, READ), Token(Role.ADMIN, ADMIN)])
    changed: list[str] = []
    context = server_context(certificates.cert, certificates.key, alpn=None)
    async for url in serve(tokens, context, changed):
        yield url, client_context(certificates.ca, alpn=None), changed


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_tokens_guard_the_http_listener(
    https: tuple[str, ssl.SSLContext, list[str]],
) -> None:
    url, context, changed = https
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
        for headers in ({}, bearer(WRONG), {"Authorization": f"Basic {ADMIN}"}):
            for method, path in (("GET", "/metrics"), ("POST", "/redrive")):
                async with session.request(method, url + path, headers=headers) as response:
                    assert response.status == 401
                    assert response.headers["WWW-Authenticate"].startswith("Bearer")
                    body = await response.text()
                    assert WRONG not in body
                    assert ADMIN not in body
        async with session.get(url + "/metrics", headers=bearer(READ)) as response:
            assert (response.status, await response.text()) == (200, "osqueue_ready 0\n")
        async with session.post(url + "/redrive", headers=bearer(READ)) as response:
            assert response.status == 403
            assert "admin role" in await response.text()
        assert changed == [], "refused requests reached no handler"
        async with session.post(url + "/redrive", headers=bearer(ADMIN)) as response:
            assert response.status == 200
        assert changed == ["redriven"]
        async with session.get(url + "/healthz") as response:
            assert response.status == 200, "a path that needs no token"


async def test_without_tokens_everything_passes() -> None:
    changed: list[str] = []
    async for url in serve(Tokens(), None, changed):
        async with aiohttp.ClientSession() as session, session.post(url + "/redrive") as response:
            assert response.status == 200
    assert changed == ["redriven"]


async def test_a_client_without_the_ca_cannot_connect(
    https: tuple[str, ssl.SSLContext, list[str]],
) -> None:
    url, _, _ = https
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await session.get(url + "/healthz")
