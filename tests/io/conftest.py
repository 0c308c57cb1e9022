"""Real storage servers for the io tests: moto's S3 server and azurite, both on 127.0.0.1.

Session fixtures start each server once, on demand: ``moto_s3`` (in-process, a bucket
created) and ``azurite`` (a subprocess from ``make tools``, a container created). Tests
then take a fresh, isolated store with ``s3_store_factory()`` / ``azure_store_factory()``
(a new random prefix each call), or open one by URL with ``moto_s3.url(prefix)`` and
``**moto_s3.options`` (or ``moto_s3.env`` as environment variables). ``memory_store`` and
``local_store`` are the in-process backends.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import http.client
import os
import queue
import re
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import boto3
import pytest
from moto.server import ThreadedMotoServer

from osqueue_io.storage import LocalFileStore, ObstoreStore, open_store

REPO_ROOT = Path(__file__).resolve().parents[2]
AZURITE_BIN = REPO_ROOT / ".tools" / "node_modules" / ".bin" / "azurite-blob"
SERVER_START_TIMEOUT = 30.0

# Environment variables that could point the stores at real clouds or change their
# behaviour; the tests configure everything explicitly.
_CLOUD_ENV_PREFIXES = ("AWS_", "GOOGLE_", "AZURE_", "AZURITE_", "OSQUEUE_INSTANCE_CREDENTIALS")


@pytest.fixture(scope="session", autouse=True)
def _hermetic_cloud_env() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.startswith(_CLOUD_ENV_PREFIXES):
                patch.delenv(name)
        yield


def fresh_prefix() -> str:
    """A prefix no other test uses, so tests sharing a server never see each other's keys."""
    return f"t-{uuid.uuid4().hex[:12]}"


def wait_for_port(host: str, port: int, timeout: float = SERVER_START_TIMEOUT) -> None:
    """Poll until ``host:port`` accepts TCP connections; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError:
            if time.monotonic() > deadline:
                pytest.fail(f"nothing listens on {host}:{port} after {timeout} s")
            time.sleep(0.05)  # polling a port, not standing in for synchronisation


# -- S3 (moto) ------------------------------------------------------------------------


@attrs.frozen
class S3Server:
    """A running moto S3 server with one bucket, and how to reach it."""

    endpoint: str
    bucket: str
    region: str = "us-east-1"
    access_key_id: str = "testing"
    secret_access_key: str = "testing"

    def url(self, prefix: str | None = None) -> str:
        """``s3://bucket/prefix`` for :func:`open_store` (a fresh prefix by default)."""
        return f"s3://{self.bucket}/{prefix or fresh_prefix()}"

    @property
    def options(self) -> dict[str, Any]:
        """Keyword options for ``open_store(self.url(), **options)``."""
        return {
            "endpoint": self.endpoint,
            "region": self.region,
            "access_key_id": self.access_key_id,
            "secret_access_key": self.secret_access_key,
            "client_options": {"allow_http": True},
        }

    @property
    def env(self) -> dict[str, str]:
        """The same configuration as environment variables."""
        return {
            "AWS_ENDPOINT": self.endpoint,
            "AWS_ALLOW_HTTP": "true",
            "AWS_REGION": self.region,
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
        }

    def open(self, prefix: str | None = None, **options: Any) -> ObstoreStore:
        store = open_store(self.url(prefix), **{**self.options, **options})
        assert isinstance(store, ObstoreStore)
        return store


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[S3Server]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        s3 = S3Server(endpoint=f"http://{host}:{port}", bucket="osqueue-test")
        boto3.client(
            "s3",
            endpoint_url=s3.endpoint,
            region_name=s3.region,
            aws_access_key_id=s3.access_key_id,
            aws_secret_access_key=s3.secret_access_key,
        ).create_bucket(Bucket=s3.bucket)
        yield s3
    finally:
        server.stop()


@pytest.fixture
def s3_store_factory(moto_s3: S3Server) -> Callable[..., ObstoreStore]:
    """Call it for a store on moto under a fresh prefix (keyword options pass through)."""
    return moto_s3.open


# -- Azure (azurite) ------------------------------------------------------------------

# Azurite's well-known development account (public, documented by Microsoft).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


@attrs.frozen
class AzureServer:
    """A running azurite blob service with one container, and how to reach it."""

    host: str
    port: int
    container: str

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}/{AZURITE_ACCOUNT}"

    def url(self, prefix: str | None = None) -> str:
        return f"az://{self.container}/{prefix or fresh_prefix()}"

    @property
    def options(self) -> dict[str, Any]:
        return {
            "account_name": AZURITE_ACCOUNT,
            "account_key": AZURITE_KEY,
            "endpoint": self.endpoint,
            "client_options": {"allow_http": True},
        }

    def open(self, prefix: str | None = None, **options: Any) -> ObstoreStore:
        store = open_store(self.url(prefix), **{**self.options, **options})
        assert isinstance(store, ObstoreStore)
        return store


def _create_azure_container(host: str, port: int, container: str) -> None:
    """Create a container with a SharedKey-signed request (obstore cannot create one)."""
    headers = {"x-ms-date": email.utils.formatdate(usegmt=True), "x-ms-version": "2021-08-06"}
    canonical_headers = "".join(f"{name}:{value}\n" for name, value in sorted(headers.items()))
    canonical_resource = f"/{AZURITE_ACCOUNT}/{AZURITE_ACCOUNT}/{container}\nrestype:container"
    # VERB, then eleven standard headers (all empty here), then the x-ms-* headers.
    string_to_sign = "PUT\n" + "\n" * 11 + canonical_headers + canonical_resource
    digest = hmac.new(base64.b64decode(AZURITE_KEY), string_to_sign.encode(), hashlib.sha256)
    signature = base64.b64encode(digest.digest()).decode()
    connection = http.client.HTTPConnection(host, port, timeout=10)
    try:
        connection.request(
            "PUT",
            f"/{AZURITE_ACCOUNT}/{container}?restype=container",
            body=b"",
            headers={**headers, "Authorization": f"SharedKey {AZURITE_ACCOUNT}:{signature}"},
        )
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    if response.status != 201:
        pytest.fail(
            f"azurite refused to create container {container!r}: {response.status} {body!r}"
        )


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzureServer]:
    if not AZURITE_BIN.exists():
        pytest.fail(
            f"azurite (the Azure blob emulator) is not installed at {AZURITE_BIN}: "
            "run `make tools` in the repository root"
        )
    workdir = tmp_path_factory.mktemp("azurite")
    process = subprocess.Popen(
        [
            str(AZURITE_BIN),
            "--inMemoryPersistence",
            "--blobHost",
            "127.0.0.1",
            # Port 0: the OS picks a free port and azurite prints it, so no race with
            # another process grabbing a port we chose.
            "--blobPort",
            "0",
            "--skipApiVersionCheck",
            "--loose",
            "--disableTelemetry",
            "--silent",
        ],
        cwd=workdir,  # anything azurite writes stays in a temp directory
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        port = _azurite_port(process)
        wait_for_port("127.0.0.1", port)
        server = AzureServer(host="127.0.0.1", port=port, container="osqueue-test")
        _create_azure_container(server.host, server.port, server.container)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _azurite_port(process: subprocess.Popen[str]) -> int:
    """Read azurite's output (on a thread, so the pipe never fills) until it names its port."""
    lines: queue.Queue[str | None] = queue.Queue()

    def drain() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=drain, name="azurite-output", daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=remaining)
        except queue.Empty:
            break
        if line is None:
            pytest.fail(f"azurite exited with {process.wait()}: {''.join(seen)}")
        seen.append(line)
        match = re.search(r"listens on https?://[^:\s]+:(\d+)", line)
        if match:
            return int(match.group(1))
    pytest.fail(f"azurite did not report its port within {SERVER_START_TIMEOUT} s: {''.join(seen)}")


@pytest.fixture
def azure_store_factory(azurite: AzureServer) -> Callable[..., ObstoreStore]:
    """Call it for a store on azurite under a fresh prefix (keyword options pass through)."""
    return azurite.open


# -- in-process backends --------------------------------------------------------------


# Both hold nothing that needs closing (their aclose is a no-op), so these fixtures are
# plain functions and work in sync and async tests alike.


@pytest.fixture
def memory_store() -> ObstoreStore:
    store = open_store("memory://")
    assert isinstance(store, ObstoreStore)
    return store


@pytest.fixture
def local_store(tmp_path: Path) -> LocalFileStore:
    return LocalFileStore(tmp_path / "store")
