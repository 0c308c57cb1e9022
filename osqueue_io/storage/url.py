"""Open any supported store from a URL-ish string, as users and the CLI name them.

=============================  =========================================================
``memory://``                  a fresh in-process obstore ``MemoryStore`` (tests, demos)
``/some/dir``, ``./dir``       :class:`LocalFileStore` (a plain path, ``~`` expanded)
``file:///some/dir``           :class:`LocalFileStore`
``s3://bucket/prefix``         obstore ``S3Store`` (``s3a://`` too)
``gs://bucket/prefix``         obstore ``GCSStore`` (``gcs://`` too)
``az://container/prefix``      obstore ``AzureStore`` (``azure://`` too)
=============================  =========================================================

Credentials, endpoint and region come from the environment variables obstore reads
(``AWS_ACCESS_KEY_ID``, ``AWS_ENDPOINT``, ``AWS_ALLOW_HTTP``, ``GOOGLE_SERVICE_ACCOUNT``,
``AZURE_STORAGE_ACCOUNT_NAME``, ``AZURE_STORAGE_USE_EMULATOR``, ...; see
``docs/storage.md``). Keyword options override them: any obstore config key for the
backend (``endpoint=``, ``access_key_id=``, ``bearer_token=``, ...), plus
``client_options=``, ``retry_config=`` and ``credential_provider=``. Options of our own:
``read_concurrency=`` (every backend), ``instance_credentials=`` (cloud backends, see
:mod:`osqueue_io.storage.credentials`), ``create_root=`` and ``lock_timeout=`` (local).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit

from obstore.store import AzureStore, GCSStore, MemoryStore, S3Store

from osqueue_io.storage import credentials
from osqueue_io.storage.base import DEFAULT_READ_CONCURRENCY, ObjectStore, as_seconds
from osqueue_io.storage.errors import InvalidKey, StorageConfigError
from osqueue_io.storage.keys import check_prefix
from osqueue_io.storage.local import LocalFileStore
from osqueue_io.storage.local_lock import DEFAULT_LOCK_TIMEOUT
from osqueue_io.storage.obstore_store import ObstoreStore

_SUPPORTED = "memory://, a directory path, file:///dir, s3://bucket, gs://bucket, az://container"
# Options that name where the data lives; in osqueue the URL alone says that.
_LOCATION_OPTIONS = ("bucket", "container_name", "prefix")


def open_store(url: str, **options: Any) -> ObjectStore:
    """Open the store ``url`` names; see the module docstring for schemes and options.

    Raises :class:`StorageConfigError` for a URL it cannot use or missing credentials,
    naming what to fix. Nothing is sent over the network here: a missing bucket or
    rejected credentials show up on the first read or write.
    """
    if not url:
        raise StorageConfigError(f"the storage URL is empty; use one of {_SUPPORTED}")
    read_concurrency = _pop_read_concurrency(url, options)
    if "://" not in url:
        return _open_local(os.path.expanduser(url), options, read_concurrency)
    parts = urlsplit(url)
    if parts.query or parts.fragment:
        raise StorageConfigError(
            f"{url}: query strings and fragments are not supported; pass options as keywords"
        )
    scheme = parts.scheme.lower()
    if scheme == "memory":
        _refuse_unknown(url, options, allowed=())
        prefix = _prefix(url, (parts.netloc + parts.path).removeprefix("/"))
        return ObstoreStore(
            MemoryStore(), prefix=prefix, url=url, read_concurrency=read_concurrency
        )
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise StorageConfigError(
                f"{url}: file URLs name a local directory, file:///absolute/path "
                f"(three slashes); got host {parts.netloc!r}"
            )
        return _open_local(unquote(parts.path), options, read_concurrency)
    if scheme in ("s3", "s3a"):
        return _open_cloud("s3", parts, options, read_concurrency)
    if scheme in ("gs", "gcs"):
        return _open_cloud("gs", parts, options, read_concurrency)
    if scheme in ("az", "azure"):
        return _open_cloud("az", parts, options, read_concurrency)
    raise StorageConfigError(f"{url}: unsupported scheme {scheme!r}; use one of {_SUPPORTED}")


def _open_local(path: str, options: dict[str, Any], read_concurrency: int) -> LocalFileStore:
    if not path:
        raise StorageConfigError("the local storage path is empty; name a directory")
    _refuse_unknown(path, options, allowed=("create_root", "lock_timeout"))
    value = options.get("lock_timeout", DEFAULT_LOCK_TIMEOUT)
    lock_timeout = as_seconds(value)
    if lock_timeout is None or lock_timeout == 0:
        raise StorageConfigError(
            f"{path}: lock_timeout must be a positive number of seconds, got "
            f"{_describe_value(value)}"
        )
    return LocalFileStore(
        path,
        create_root=bool(options.get("create_root", True)),
        read_concurrency=read_concurrency,
        lock_timeout=lock_timeout,
    )


def _open_cloud(
    scheme: str, parts: SplitResult, options: dict[str, Any], read_concurrency: int
) -> ObstoreStore:
    bucket = parts.netloc
    prefix = _prefix(parts.geturl(), unquote(parts.path).removeprefix("/"))
    canonical = f"{scheme}://{bucket}/{prefix}" if prefix else f"{scheme}://{bucket}"
    noun = "container" if scheme == "az" else "bucket"
    if not bucket:
        raise StorageConfigError(
            f"{parts.geturl()}: the URL names no {noun}; write {scheme}://<{noun}>/<prefix>"
        )
    if "@" in bucket or ":" in bucket:
        raise StorageConfigError(
            f"{parts.geturl()}: put only the {noun} name after {scheme}://; pass the "
            "account, endpoint and credentials as options or environment variables"
        )
    for name in _LOCATION_OPTIONS:
        if name in options:
            raise StorageConfigError(
                f"{canonical}: the {noun} and prefix come from the URL; drop the {name}= option"
            )
    allow_instance = credentials.instance_credentials_allowed(options)
    obstore_options = {k: v for k, v in options.items() if k != "instance_credentials"}
    check_options = {**obstore_options, "instance_credentials": allow_instance}
    environ: Mapping[str, str] = os.environ
    try:
        if scheme == "s3":
            credentials.check_s3(canonical, check_options, environ)
            store: S3Store | GCSStore | AzureStore = S3Store(bucket, **obstore_options)
        elif scheme == "gs":
            credentials.check_gcs(canonical, check_options, environ)
            store = GCSStore(bucket, **obstore_options)
        else:
            credentials.check_azure(canonical, check_options, environ)
            store = AzureStore(bucket, **obstore_options)
    except StorageConfigError:
        raise
    except Exception as error:
        # obstore validates its configuration when it builds the store: unknown option
        # names, malformed values, unreadable service-account files.
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        raise StorageConfigError(f"{canonical}: bad storage options: {first_line}") from error
    return ObstoreStore(store, prefix=prefix, url=canonical, read_concurrency=read_concurrency)


def _pop_read_concurrency(url: str, options: dict[str, Any]) -> int:
    value = options.pop("read_concurrency", DEFAULT_READ_CONCURRENCY)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise StorageConfigError(
            f"{url}: read_concurrency must be a positive int, got {_describe_value(value)}"
        )
    return value


def _describe_value(value: object) -> str:
    """A short description of a rejected option value: a number, or only its type."""
    if isinstance(value, float) or (isinstance(value, int) and abs(value) < 10**12):
        return repr(value)
    if isinstance(value, int):
        return "an int too large to show"
    return f"a value of type {type(value).__name__}"


def _prefix(url: str, path: str) -> str:
    try:
        return check_prefix(path)
    except InvalidKey as error:
        raise StorageConfigError(f"{url}: the path is not a valid key prefix: {error}") from error


def _refuse_unknown(url: str, options: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        accepted = ", ".join(allowed) or "none"
        raise StorageConfigError(
            f"{url}: unknown option(s) {', '.join(unknown)} (accepted here: {accepted})"
        )
