"""open_store: URL -> backend and configuration, env variables, overrides, and clear errors.

GCS has no emulator here that accepts obstore's conditional headers (fake-gcs-server
answers 400), so GCS is checked against a tiny recording server: the configuration
mapping, and that create sends generation 0 and update sends the expected generation.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import attrs
import pytest
from obstore.store import AzureStore, GCSStore, MemoryStore, S3Store

from osqueue_io.storage import (
    AlreadyExists,
    LocalFileStore,
    ObjectVersion,
    ObstoreStore,
    StorageConfigError,
    WriteConflict,
    WriteNotApplied,
    open_store,
)
from tests.io.conftest import AzureServer, S3Server

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def _no_user_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # gcloud's application-default credentials live under HOME; never use the user's.
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def obstore_store(store: object) -> ObstoreStore:
    assert isinstance(store, ObstoreStore)
    return store


# -- memory and local -----------------------------------------------------------------


async def test_memory_url_opens_a_fresh_memory_store_each_time() -> None:
    first, second = obstore_store(open_store("memory://")), obstore_store(open_store("memory:///"))
    assert isinstance(first.inner, MemoryStore)

    await first.create("state", b"x")

    assert await second.read("state") is None
    assert first.url == "memory://"


def test_memory_url_path_becomes_the_prefix() -> None:
    assert obstore_store(open_store("memory://queues/emails")).prefix == "queues/emails"


@pytest.mark.parametrize("form", ["plain", "file-url", "file-localhost"])
def test_paths_and_file_urls_open_the_local_backend(tmp_path: Path, form: str) -> None:
    root = tmp_path / "data dir"
    url = {
        "plain": str(root),
        "file-url": root.as_uri(),
        "file-localhost": root.as_uri().replace("file://", "file://localhost"),
    }[form]

    store = open_store(url)

    assert isinstance(store, LocalFileStore)
    assert store.root == root
    assert root.is_dir()


def test_relative_and_home_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    relative = open_store("relative/dir")
    assert isinstance(relative, LocalFileStore)
    assert relative.root == tmp_path / "relative" / "dir"

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    home = open_store("~/queue")
    assert isinstance(home, LocalFileStore)
    assert home.root == tmp_path / "home" / "queue"


def test_local_options(tmp_path: Path) -> None:
    with pytest.raises(StorageConfigError, match="does not exist"):
        open_store(str(tmp_path / "missing"), create_root=False)
    with pytest.raises(StorageConfigError, match=r"unknown option.*endpoint"):
        open_store(str(tmp_path), endpoint="http://x")


@pytest.mark.parametrize("form", ["plain", "file-url"])
def test_lock_timeout_option_reaches_the_local_backend(tmp_path: Path, form: str) -> None:
    url = str(tmp_path) if form == "plain" else tmp_path.as_uri()

    store = open_store(url, lock_timeout=2.5)
    default = open_store(url)

    assert isinstance(store, LocalFileStore)
    assert store.lock_timeout == 2.5
    assert isinstance(default, LocalFileStore)
    assert default.lock_timeout == 10.0


@pytest.mark.parametrize("value", [0, -1, float("inf"), float("nan"), 10**400, "10", True, None])
def test_lock_timeout_must_be_a_positive_number(tmp_path: Path, value: object) -> None:
    with pytest.raises(StorageConfigError, match="lock_timeout must be a positive number"):
        open_store(str(tmp_path), lock_timeout=value)


def test_lock_timeout_is_refused_for_other_backends() -> None:
    with pytest.raises(StorageConfigError, match=r"unknown option.*lock_timeout"):
        open_store("memory://", lock_timeout=1.0)


# -- S3 -------------------------------------------------------------------------------


async def test_s3_url_and_options_map_to_an_s3_store(moto_s3: S3Server) -> None:
    store = obstore_store(open_store(f"s3://{moto_s3.bucket}/queues/emails", **moto_s3.options))

    assert isinstance(store.inner, S3Store)
    assert store.url == f"s3://{moto_s3.bucket}/queues/emails"
    assert store.prefix == "queues/emails"
    config: dict[str, Any] = dict(store.inner.config)
    assert config["bucket"] == moto_s3.bucket
    assert config["endpoint"] == moto_s3.endpoint
    assert config["access_key_id"] == moto_s3.access_key_id
    assert store.inner.client_options == {"allow_http": "true"}

    await store.create("state.json", b"{}")

    # The prefix is a real "directory" of the bucket.
    whole_bucket = obstore_store(open_store(f"s3://{moto_s3.bucket}", **moto_s3.options))
    assert "queues/emails/state.json" in await whole_bucket.list("queues")


async def test_s3_configured_from_environment(
    moto_s3: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in moto_s3.env.items():
        monkeypatch.setenv(name, value)

    store = open_store(moto_s3.url())
    version = await store.create("state.json", b"from env")

    stored = await store.read("state.json")
    assert stored is not None
    assert (stored.data, stored.version) == (b"from env", version)


async def test_keyword_options_override_environment(
    moto_s3: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in moto_s3.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there

    store = obstore_store(open_store(moto_s3.url(), endpoint=moto_s3.endpoint))

    await store.create("state.json", b"x")
    assert await store.read("state.json") is not None


async def test_s3a_is_an_alias(moto_s3: S3Server) -> None:
    store = obstore_store(open_store(f"s3a://{moto_s3.bucket}/p", **moto_s3.options))
    assert isinstance(store.inner, S3Store)
    assert store.url == f"s3://{moto_s3.bucket}/p"


async def test_missing_bucket_is_a_config_error(moto_s3: S3Server) -> None:
    store = open_store("s3://no-such-bucket/p", **moto_s3.options)

    with pytest.raises(StorageConfigError, match="does not exist"):
        await store.read("state.json")
    with pytest.raises(StorageConfigError, match="does not exist"):
        await store.create("state.json", b"x")
    with pytest.raises(StorageConfigError, match="does not exist"):
        await store.update("state.json", b"x", ObjectVersion(e_tag='"abc"', version=None))
    with pytest.raises(StorageConfigError, match="does not exist"):
        await store.list("")


def test_s3_without_credentials_names_them() -> None:
    with pytest.raises(StorageConfigError, match=r"AWS_ACCESS_KEY_ID.*AWS_SECRET_ACCESS_KEY"):
        open_store("s3://bucket/p")


def test_s3_access_key_without_secret_names_the_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "id")
    with pytest.raises(StorageConfigError, match="AWS_SECRET_ACCESS_KEY"):
        open_store("s3://bucket/p")


@pytest.mark.parametrize(
    ("options", "env"),
    [
        ({"instance_credentials": True}, {}),
        ({}, {"OSQUEUE_INSTANCE_CREDENTIALS": "true"}),
        ({"skip_signature": True}, {}),
        ({}, {"AWS_WEB_IDENTITY_TOKEN_FILE": "/token", "AWS_ROLE_ARN": "arn:aws:iam::1:role/r"}),
    ],
)
def test_s3_other_credential_sources_are_accepted(
    monkeypatch: pytest.MonkeyPatch, options: dict[str, Any], env: dict[str, str]
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    store = obstore_store(open_store("s3://bucket/p", **options))
    assert isinstance(store.inner, S3Store)


# -- GCS ------------------------------------------------------------------------------


@attrs.define
class FakeGcs:
    """Just enough of GCS's XML API to see the generation preconditions obstore sends."""

    objects: dict[str, tuple[bytes, int]] = attrs.field(factory=dict)
    preconditions: list[tuple[str, str, str | None]] = attrs.field(factory=list)
    next_generation: int = 1000
    lock: threading.Lock = attrs.field(factory=threading.Lock)


def _gcs_handler(fake: FakeGcs) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            match = self.headers.get("x-goog-if-generation-match")
            path = unquote(self.path)  # obstore escapes the key's "/" and "."
            with fake.lock:
                fake.preconditions.append(("PUT", path, match))
                current = fake.objects.get(path)
                current_generation = current[1] if current else 0
                if match is not None and int(match) != current_generation:
                    self._reply(412, b"<Error><Code>PreconditionFailed</Code></Error>")
                    return
                fake.next_generation += 1
                fake.objects[path] = (body, fake.next_generation)
                self._reply(200, b"", generation=fake.next_generation)

        def do_GET(self) -> None:
            with fake.lock:
                current = fake.objects.get(unquote(self.path))
            if current is None:
                self._reply(404, b"<Error><Code>NoSuchKey</Code></Error>")
            else:
                self._reply(200, current[0], generation=current[1])

        def _reply(self, status: int, body: bytes, generation: int | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Last-Modified", formatdate(usegmt=True))
            if generation is not None:
                self.send_header("ETag", f'"etag-{generation}"')
                self.send_header("x-goog-generation", str(generation))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def fake_gcs() -> Iterator[tuple[FakeGcs, str]]:
    fake = FakeGcs()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _gcs_handler(fake))
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield fake, f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def gcs_store(base_url: str, prefix: str = "p") -> ObstoreStore:
    # bearer_token: never let GCSStore ask the cloud metadata address for a token.
    return obstore_store(
        open_store(
            f"gs://bkt/{prefix}",
            bearer_token="test-token",
            base_url=base_url,
            client_options={"allow_http": True},
        )
    )


def test_gcs_url_and_options_map_to_a_gcs_store() -> None:
    store = gcs_store("http://127.0.0.1:9", prefix="queues/emails")

    assert isinstance(store.inner, GCSStore)
    assert dict(store.inner.config) == {
        "bucket": "bkt",
        "bearer_token": "test-token",
        "base_url": "http://127.0.0.1:9",
    }
    assert (store.url, store.prefix) == ("gs://bkt/queues/emails", "queues/emails")


async def test_gcs_writes_send_the_generation(fake_gcs: tuple[FakeGcs, str]) -> None:
    fake, base_url = fake_gcs
    store = gcs_store(base_url)

    created = await store.create("state.json", b"one")
    read = await store.read("state.json")
    assert read is not None
    updated = await store.update("state.json", b"two", read.version)
    with pytest.raises(WriteConflict):
        await store.update("state.json", b"stale", created)
    with pytest.raises(AlreadyExists):
        await store.create("state.json", b"again")

    assert created.version == read.version.version == "1001"
    assert updated.version == "1002"
    assert fake.preconditions == [
        ("PUT", "/bkt/p/state.json", "0"),
        ("PUT", "/bkt/p/state.json", "1001"),
        ("PUT", "/bkt/p/state.json", "1001"),
        ("PUT", "/bkt/p/state.json", "0"),
    ]


async def test_gcs_update_without_generation_is_not_sent(fake_gcs: tuple[FakeGcs, str]) -> None:
    fake, base_url = fake_gcs
    store = gcs_store(base_url)

    with pytest.raises(WriteNotApplied, match="lacks what this backend compares"):
        await store.update("state.json", b"x", ObjectVersion(e_tag='"etag-1"', version=None))
    assert fake.preconditions == []


def test_gcs_without_credentials_names_them() -> None:
    with pytest.raises(StorageConfigError, match="GOOGLE_SERVICE_ACCOUNT"):
        open_store("gs://bkt/p")


def test_gcs_unreadable_service_account_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(StorageConfigError, match="service account"):
        open_store("gs://bkt/p", service_account=str(tmp_path / "missing.json"))


# -- Azure ----------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["az", "azure"])
async def test_azure_url_and_options_map_to_an_azure_store(
    azurite: AzureServer, scheme: str
) -> None:
    store = obstore_store(open_store(f"{scheme}://{azurite.container}/q1", **azurite.options))

    assert isinstance(store.inner, AzureStore)
    assert store.url == f"az://{azurite.container}/q1"
    assert dict(store.inner.config)["container_name"] == azurite.container
    version = await store.create(f"{scheme}.json", b"x")
    assert await store.update(f"{scheme}.json", b"y", version) != version


async def test_azure_emulator_from_environment(
    azurite: AzureServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AZURE_STORAGE_USE_EMULATOR", "true")
    monkeypatch.setenv("AZURITE_BLOB_STORAGE_URL", f"http://{azurite.host}:{azurite.port}")

    store = open_store(azurite.url())

    await store.create("state.json", b"from env")
    stored = await store.read("state.json")
    assert stored is not None
    assert stored.data == b"from env"


def test_azure_without_account_names_it() -> None:
    with pytest.raises(StorageConfigError, match="AZURE_STORAGE_ACCOUNT_NAME"):
        open_store("az://container/p")


def test_azure_without_credentials_names_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_NAME", "account")
    with pytest.raises(StorageConfigError, match="AZURE_STORAGE_ACCOUNT_KEY"):
        open_store("az://container/p")


# -- bad URLs and options -------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "empty"),
        ("ftp://host/x", "unsupported scheme 'ftp'"),
        ("s3://", "names no bucket"),
        ("s3:///prefix", "names no bucket"),
        ("az://", "names no container"),
        ("s3://bucket//double", "not a valid key prefix"),
        ("gs://bucket/../up", "not a valid key prefix"),
        ("s3://bucket/p?endpoint=http://x", "query strings"),
        ("az://container@account/p", "only the container name"),
        ("file://host/dir", "three slashes"),
    ],
)
def test_bad_urls_are_config_errors_that_say_why(url: str, message: str) -> None:
    with pytest.raises(StorageConfigError, match=message):
        open_store(url, access_key_id="x", secret_access_key="x")


def test_unknown_obstore_option_is_a_config_error(moto_s3: S3Server) -> None:
    with pytest.raises(StorageConfigError, match=r"bad storage options.*not_an_option"):
        open_store(moto_s3.url(), **moto_s3.options, not_an_option="x")


def test_unknown_memory_option_is_a_config_error() -> None:
    with pytest.raises(StorageConfigError, match=r"unknown option.*endpoint"):
        open_store("memory://", endpoint="x")


def test_location_options_are_refused(moto_s3: S3Server) -> None:
    with pytest.raises(StorageConfigError, match="drop the bucket= option"):
        open_store(moto_s3.url(), **moto_s3.options, bucket="other")


@pytest.mark.parametrize("value", [0, -1, "8", True])
def test_read_concurrency_must_be_a_positive_int(value: object) -> None:
    with pytest.raises(StorageConfigError, match="read_concurrency"):
        open_store("memory://", read_concurrency=value)


def test_rejected_option_values_are_not_echoed_unbounded(tmp_path: Path) -> None:
    for name, value in [
        ("read_concurrency", "x" * 10_000),
        ("read_concurrency", -(10**5000)),
        ("lock_timeout", -(10**5000)),
        ("lock_timeout", ["x" * 10_000]),
    ]:
        with pytest.raises(StorageConfigError) as raised:
            open_store(str(tmp_path), **{name: value})
        assert len(str(raised.value)) < len(str(tmp_path)) + 200
