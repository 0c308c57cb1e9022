"""How obstore failures are classified: did the write land, may it have, or surely not?

Each case is a real failure over a real socket on 127.0.0.1: a port nobody listens on,
and a small server that answers 4xx/5xx, resets the connection, or never answers.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from obstore.store import LocalStore

from osqueue_io.storage import (
    ObjectStore,
    ObjectVersion,
    ObstoreStore,
    OutcomeUnknown,
    ReadFailed,
    StorageConfigError,
    StorageError,
    WriteNotApplied,
    open_store,
)
from tests.io.conftest import AzureServer

pytestmark = pytest.mark.anyio

EXPECTED = ObjectVersion(e_tag='"abc"', version=None)


class MisbehavingServer:
    """Accepts HTTP requests and answers each in the way ``behaviour`` says."""

    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour
        self.stopped = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                connection, _ = self.listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._answer, args=(connection,), daemon=True).start()

    def _answer(self, connection: socket.socket) -> None:
        with connection:
            connection.settimeout(10)
            request = b""
            while b"\r\n\r\n" not in request:
                chunk = connection.recv(65536)
                if not chunk:
                    return
                request += chunk
            if self.behaviour == "reset":
                # SO_LINGER with a zero timeout makes close() send RST, not FIN.
                connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                return
            if self.behaviour == "hang":
                self.stopped.wait()
                return
            status = {"503": "503 Service Unavailable", "400": "400 Bad Request"}.get(
                self.behaviour, "403 Forbidden"
            )
            body = b"<Error><Code>Nope</Code></Error>"
            connection.sendall(
                f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n".encode()
                + body
            )

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join()
        self.listener.close()


@pytest.fixture
def misbehaving() -> Iterator[Callable[[str], MisbehavingServer]]:
    servers: list[MisbehavingServer] = []

    def start(behaviour: str) -> MisbehavingServer:
        servers.append(MisbehavingServer(behaviour))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def closed_port() -> int:
    """A port that was free a moment ago, so nothing listens on it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def s3_store(port: int, retries: int = 0) -> ObjectStore:
    return open_store(
        "s3://bucket/p",
        endpoint=f"http://127.0.0.1:{port}",
        access_key_id="x",
        secret_access_key="x",
        client_options={"allow_http": True, "timeout": "300ms"},
        retry_config={
            "max_retries": retries,
            "backoff": {"init_backoff": timedelta(milliseconds=5)},
            "retry_timeout": timedelta(seconds=10),
        },
    )


async def assert_write_errors(store: ObjectStore, expected: type[StorageError]) -> None:
    with pytest.raises(expected) as created:
        await store.create("state.json", b"x")
    with pytest.raises(expected) as updated:
        await store.update("state.json", b"x", EXPECTED)
    for raised in (created, updated):
        assert type(raised.value) is expected
        assert raised.value.__cause__ is not None


async def test_connection_refused_is_not_applied() -> None:
    store = s3_store(closed_port())

    await assert_write_errors(store, WriteNotApplied)
    with pytest.raises(ReadFailed):
        await store.read("state.json")


async def test_connection_refused_after_retries_is_unknown() -> None:
    """obstore reports only its last attempt; an earlier one may have reached a server."""
    await assert_write_errors(s3_store(closed_port(), retries=2), OutcomeUnknown)


@pytest.mark.parametrize(
    ("behaviour", "expected"),
    [
        ("503", OutcomeUnknown),
        ("reset", OutcomeUnknown),
        ("hang", OutcomeUnknown),
        ("400", WriteNotApplied),
        ("403", WriteNotApplied),
    ],
)
async def test_server_failures(
    misbehaving: Callable[[str], MisbehavingServer],
    behaviour: str,
    expected: type[StorageError],
) -> None:
    store = s3_store(misbehaving(behaviour).port)

    await assert_write_errors(store, expected)
    with pytest.raises(ReadFailed):
        await store.read("state.json")


async def test_permission_errors_say_to_check_credentials(
    misbehaving: Callable[[str], MisbehavingServer],
) -> None:
    store = s3_store(misbehaving("403").port)

    with pytest.raises(WriteNotApplied, match="credentials"):
        await store.create("state.json", b"x")
    with pytest.raises(ReadFailed, match="credentials"):
        await store.read("state.json")


async def test_wrong_azure_key_is_not_applied(azurite: AzureServer) -> None:
    store = azurite.open(account_key="d3Jvbmcga2V5")  # base64 of "wrong key"

    await assert_write_errors(store, WriteNotApplied)


async def test_backend_without_conditional_update_is_a_config_error(tmp_path: Path) -> None:
    store = ObstoreStore(LocalStore(str(tmp_path)))
    version = await store.create("state.json", b"x")

    with pytest.raises(StorageConfigError, match="conditional writes"):
        await store.update("state.json", b"y", version)


async def test_update_with_empty_version_is_not_sent(memory_store: ObstoreStore) -> None:
    await memory_store.create("state.json", b"x")

    with pytest.raises(WriteNotApplied, match="empty"):
        await memory_store.update("state.json", b"y", ObjectVersion(e_tag=None, version=None))
