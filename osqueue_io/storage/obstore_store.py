"""The :class:`ObjectStore` over any obstore store: S3, GCS, Azure, or memory."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import obstore
from obstore.store import AzureStore, GCSStore, MemoryStore, S3Store

from osqueue_io.storage import obstore_errors
from osqueue_io.storage.base import DEFAULT_READ_CONCURRENCY, check_list_limit, read_concurrently
from osqueue_io.storage.errors import WriteNotApplied
from osqueue_io.storage.keys import check_key, check_prefix, join_key
from osqueue_io.storage.version import ObjectVersion, StoredObject

if TYPE_CHECKING:
    from obstore import ObjectMeta, PutMode, PutResult, UpdateVersion
    from obstore.store import ObjectStore as ObstoreBackend

# The most keys one chunk of a limited listing holds (S3, GCS and Azure pages hold up to
# 1,000 keys; obstore's own default chunk is 50).
_LIST_CHUNK = 1000


class ObstoreStore:
    """Compare-and-swap storage on top of an obstore store.

    ``create`` is a put with ``mode="create"`` (``If-None-Match: *`` on S3/Azure,
    generation 0 on GCS), ``update`` a put with the expected version (``If-Match`` on
    S3/Azure, ``x-goog-if-generation-match`` on GCS). Writes are always a single PUT:
    multipart uploads ignore preconditions, so they are never used, whatever the size.

    ``prefix`` puts every key under a "directory" of the bucket (``s3://bucket/prefix``);
    it is applied here rather than by obstore so it behaves the same on every backend,
    memory included. Build one with :func:`osqueue_io.storage.open_store`, or wrap a
    store you configured yourself::

        ObstoreStore(S3Store("bucket", ...), prefix="queues/emails")
    """

    def __init__(
        self,
        store: ObstoreBackend,
        *,
        prefix: str = "",
        url: str | None = None,
        read_concurrency: int = DEFAULT_READ_CONCURRENCY,
    ) -> None:
        if read_concurrency < 1:
            raise ValueError("read_concurrency must be at least 1")
        self._store = store
        self._prefix = check_prefix(prefix)
        self._url = url or _describe(store, self._prefix)
        self._read_concurrency = read_concurrency
        # An in-process MemoryStore only copies memory: its synchronous calls take ~1 µs
        # of CPU where the async ones cost ~60 µs (a Tokio task and a wake-up of the
        # event loop from another thread), more than the broker's work per request.
        self._inline = isinstance(store, MemoryStore)

    @property
    def url(self) -> str:
        """Where the store points, for logs (no credentials)."""
        return self._url

    @property
    def inner(self) -> ObstoreBackend:
        """The wrapped obstore store (its ``config`` shows how it was built)."""
        return self._store

    @property
    def prefix(self) -> str:
        """The prefix put in front of every key (``""`` for none)."""
        return self._prefix

    def __repr__(self) -> str:
        return f"ObstoreStore({self._url!r})"

    async def read(self, key: str) -> StoredObject | None:
        """Return the object's bytes and version, or ``None`` if the key is absent."""
        path = join_key(self._prefix, check_key(key))
        try:
            if self._inline:
                result = obstore.get(self._store, path)
                data = result.bytes()
            else:
                result = await obstore.get_async(self._store, path)
                data = await result.bytes_async()
        except FileNotFoundError as error:
            self._raise_if_bucket_missing(error)
            return None
        except Exception as error:
            raise obstore_errors.read_error(error, what=repr(key), store_url=self._url) from error
        return StoredObject(data=data.to_bytes(), version=_version_of(result.meta))

    async def head(self, key: str) -> ObjectVersion | None:
        """Return the object's version (a HEAD request), or ``None`` if the key is absent.

        A HEAD answer has no body, so on S3 and Azure a missing bucket cannot be told
        from a missing key here: it reads as ``None``, where ``read`` would raise.
        """
        path = join_key(self._prefix, check_key(key))
        try:
            if self._inline:
                meta = obstore.head(self._store, path)
            else:
                meta = await obstore.head_async(self._store, path)
        except FileNotFoundError as error:
            self._raise_if_bucket_missing(error)
            return None
        except Exception as error:
            raise obstore_errors.read_error(error, what=repr(key), store_url=self._url) from error
        return _version_of(meta)

    def _raise_if_bucket_missing(self, error: FileNotFoundError) -> None:
        """A 404 is a missing key, unless its body says the bucket itself is missing."""
        config_error = obstore_errors.missing_bucket(error, self._url)
        if config_error is not None:
            raise config_error from error

    async def create(self, key: str, data: bytes) -> ObjectVersion:
        """Write ``data`` only if ``key`` is absent; ``AlreadyExists`` otherwise."""
        return await self._put(key, data, "create", expected=None)

    async def update(self, key: str, data: bytes, expected: ObjectVersion) -> ObjectVersion:
        """Replace the object only if it is still at ``expected``; ``WriteConflict`` otherwise."""
        mode: UpdateVersion = {}
        # obstore rejects a None value ("'None' is not an instance of 'str'"): leave it out.
        if expected.e_tag is not None:
            mode["e_tag"] = expected.e_tag
        if expected.version is not None:
            mode["version"] = expected.version
        if not mode:
            raise WriteNotApplied(
                key, "update", "the expected version is empty; pass the version a read returned"
            )
        return await self._put(key, data, mode, expected=expected)

    async def _put(
        self, key: str, data: bytes, mode: PutMode, *, expected: ObjectVersion | None
    ) -> ObjectVersion:
        """One conditional put; every failure becomes the storage error that says
        whether it landed."""
        path = join_key(self._prefix, check_key(key))
        try:
            if self._inline:
                result = obstore.put(self._store, path, data, mode=mode, use_multipart=False)
            else:
                result = await obstore.put_async(
                    self._store, path, data, mode=mode, use_multipart=False
                )
        except Exception as error:
            raise obstore_errors.write_error(
                error,
                key=key,
                operation="create" if expected is None else "update",
                expected=expected,
                store_url=self._url,
            ) from error
        return _version_of(result)

    async def delete(self, key: str) -> None:
        """Remove the object at ``key`` (one DELETE request); absent is no error.

        S3 and memory answer an absent key with success, GCS, Azure and a local
        directory with "not found": both mean the object is gone.
        """
        path = join_key(self._prefix, check_key(key))
        try:
            if self._inline:
                obstore.delete(self._store, path)
            else:
                await obstore.delete_async(self._store, path)
        except FileNotFoundError as error:
            self._raise_if_bucket_missing(error)
        except Exception as error:
            raise obstore_errors.write_error(
                error, key=key, operation="delete", expected=None, store_url=self._url
            ) from error

    async def list(
        self, prefix: str, *, limit: int | None = None, start_after: str | None = None
    ) -> list[str]:
        """Return the sorted keys under ``prefix`` (whole segments; ``""`` for all).

        With ``limit``, stop reading obstore's listing stream (and so stop requesting
        further pages) once it has produced ``limit`` keys; return those, sorted. With
        ``start_after``, only keys after it: obstore is given it as ``offset`` (S3 starts
        its listing there), and the keys are filtered here too, because on Azure
        (azurite, obstore 0.12) a listing with an offset starts from the first key.
        """
        relative = check_prefix(prefix)
        wanted = check_list_limit(limit)
        full = join_key(self._prefix, relative) if relative else self._prefix
        strip = len(self._prefix) + 1 if self._prefix else 0
        offset = join_key(self._prefix, start_after) if start_after is not None else None

        def after(metas: Sequence[ObjectMeta]) -> list[str]:
            found = [meta["path"][strip:] for meta in metas]
            return found if start_after is None else [k for k in found if k > start_after]

        keys: list[str] = []
        try:
            if wanted is None:
                metas = await obstore.list(
                    self._store, prefix=full or None, offset=offset
                ).collect_async()
                keys.extend(after(metas))
            else:
                stream = obstore.list(
                    self._store,
                    prefix=full or None,
                    offset=offset,
                    chunk_size=min(wanted, _LIST_CHUNK),
                )
                async for chunk in stream:
                    keys.extend(after(chunk))
                    if len(keys) >= wanted:
                        break
        except Exception as error:
            raise obstore_errors.read_error(
                error, what=f"the listing of {prefix!r}", store_url=self._url
            ) from error
        return sorted(keys)[:wanted]

    async def read_many(self, keys: Sequence[str]) -> dict[str, StoredObject | None]:
        """Read several keys concurrently (bounded); absent keys map to ``None``."""
        return await read_concurrently(self.read, keys, self._read_concurrency)

    async def aclose(self) -> None:
        """Nothing to release: obstore drops its connection pool with the store object."""


def _describe(store: ObstoreBackend, prefix: str) -> str:
    """A URL-like name for a store built by hand, for logs: scheme, bucket, prefix."""
    if isinstance(store, S3Store):
        base = f"s3://{store.config.get('bucket')}/"
    elif isinstance(store, GCSStore):
        base = f"gs://{store.config.get('bucket')}/"
    elif isinstance(store, AzureStore):
        base = f"az://{store.config.get('container_name')}/"
    elif isinstance(store, MemoryStore):
        base = "memory://"
    else:
        base = f"{type(store).__name__.lower()}://"
    if prefix:
        return base + prefix
    return base if base.endswith("://") else base.removesuffix("/")


def _version_of(result: PutResult | ObjectMeta) -> ObjectVersion:
    return ObjectVersion(e_tag=result["e_tag"], version=result["version"])
