"""The broker's HTTP listeners behind its tokens (docs/security.md): the command line
guards the dashboard and the metrics with the same tokens as gRPC, ``read`` for pages
and metrics, ``admin`` for the buttons that change the queue, and serves them over TLS
with the same certificate."""

from __future__ import annotations

import http.client
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from osqueue_io.security import client_context
from tests.io.http.conftest import WebBroker
from tests.io.security.certs import make_certificates

READ = "r-0123456789abcdef"
ADMIN = "a-0123456789abcdef"


def status(url: str, token: str | None = None, data: bytes | None = None) -> int:
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


@pytest.fixture
def guarded(tmp_path: Path) -> Iterator[WebBroker]:
    broker = WebBroker(
        str(tmp_path / "queue"), "--token", f"read:{READ}", "--token", f"admin:{ADMIN}"
    )
    yield broker
    broker.kill()


def test_pages_and_metrics_need_a_read_token(guarded: WebBroker) -> None:
    for url in (guarded.metrics + "/metrics", guarded.dashboard + "/"):
        assert status(url) == 401
        assert status(url, "wrong-token-0123456") == 401
        assert status(url, READ) == 200
        assert status(url, ADMIN) == 200
    guarded.collect()
    assert READ not in guarded.text, "a token was logged"
    assert "wrong-token" not in guarded.text, "a refused token was logged"


def test_changing_the_queue_needs_an_admin_token(guarded: WebBroker) -> None:
    url = guarded.dashboard + "/dead/redrive"
    assert status(url, data=b"queue=default") == 401
    assert status(url, READ, data=b"queue=default") == 403


def test_tls_listeners_speak_http_1_1_to_clients_offering_h2(tmp_path: Path) -> None:
    """Browsers and curl offer ``h2`` first by ALPN; the listeners speak HTTP/1.1 alone,
    so they must not accept it (they did, sharing gRPC's context, and curl's HTTP/2
    preface got a 400)."""
    certificates = make_certificates(tmp_path)
    broker = WebBroker(
        str(tmp_path / "queue"),
        *("--tls-cert", str(certificates.cert), "--tls-key", str(certificates.key)),
        *("--token", f"read:{READ}"),
    )
    try:
        context = client_context(certificates.ca, alpn=("h2", "http/1.1"))  # as curl does
        for url in (broker.metrics + "/metrics", broker.dashboard + "/"):
            parts = urllib.parse.urlsplit(url)
            assert parts.scheme == "https"
            connection = http.client.HTTPSConnection(
                "127.0.0.1", parts.port, context=context, timeout=10
            )
            try:
                connection.connect()
                assert connection.sock is not None
                assert connection.sock.selected_alpn_protocol() in (None, "http/1.1")
                connection.request("GET", parts.path, headers={"Authorization": f"Bearer {READ}"})
                assert connection.getresponse().status == 200
            finally:
                connection.close()
    finally:
        broker.kill()
