"""A real broker subprocess on 127.0.0.1 with its HTTP listeners (port 0: the ports it
logs are read back), and the blocking client to drive it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from osqueue_io.sync import RemoteQueue
from tests.io.distributed.conftest import BrokerProcess, ChildProcess


class WebBroker(BrokerProcess):
    """A broker with ``--http-listen`` and ``--metrics-listen`` on free ports (their
    URLs ``https://`` when it has ``--tls-cert``)."""

    def __init__(self, data: str, *flags: str) -> None:
        super().__init__(
            data, "--http-listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", *flags
        )
        self.dashboard, self.metrics = http_urls(self)


def http_urls(broker: ChildProcess) -> tuple[str, str]:
    """The dashboard's and the metrics' base URLs a broker logged (read so far)."""
    return (
        _logged(broker, r"dashboard at (https?://127\.0\.0\.1:\d+)/"),
        _logged(broker, r"metrics at (https?://127\.0\.0\.1:\d+)/metrics"),
    )


def _logged(broker: ChildProcess, pattern: str) -> str:
    found = [m.group(1) for line in broker.output if (m := re.search(pattern, line))]
    assert found, f"the broker logged no {pattern!r}:\n{broker.text}"
    return found[-1]


@pytest.fixture
def web_broker(tmp_path: Path) -> Iterator[WebBroker]:
    """A broker on a local directory: failed jobs retried at once, two attempts each."""
    broker = WebBroker(
        str(tmp_path / "queue"), "--retry-base", "0", "--retry-cap", "0", "--max-attempts", "2"
    )
    try:
        yield broker
    finally:
        broker.kill()


@pytest.fixture
def client(web_broker: WebBroker) -> Iterator[RemoteQueue[bytes]]:
    with RemoteQueue(web_broker.address, bytes) as queue:
        yield queue
