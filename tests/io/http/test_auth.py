"""The broker's HTTP listeners behind its tokens (docs/security.md): the command line
guards the dashboard and the metrics with the same tokens as gRPC, ``read`` for pages
and metrics, ``admin`` for the buttons that change the queue."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.io.http.conftest import WebBroker

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
