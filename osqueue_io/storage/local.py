"""osqueue's own local-filesystem backend: compare-and-swap that holds across processes.

obstore's ``LocalStore`` cannot do a conditional update, and its e_tags (inode, mtime,
size) are not a safe version token, so this backend does the whole job itself.

Theory of operation
-------------------
Each object is one file, ``<root>/<key>``, holding a one-line header and the data::

    osqueue-object-v1 <counter> <nonce> <length>\\n<data>

The version token is ``<counter>-<nonce>``: the counter goes up by one on every write
(for people reading the files), the nonce is 64 random bits chosen per write, so a token
never comes back, not even when a key is deleted by hand and created again (no ABA).

Every write to a directory holds an exclusive ``flock`` on ``<dir>/.osq-lock``. Inside
the lock it reads the current token, compares it with the expected one, writes the new
file to ``<dir>/.osq-tmp``, fsyncs it, renames it over the object (atomic), and fsyncs
the directory so the rename survives a power cut. Readers take no lock: a rename swaps
whole files, so a reader sees the old object or the new one, never a mix. The wait for
the lock is bounded (``lock_timeout``) and logged: see :mod:`.local_lock`.

Directories are made durable too: each one this backend creates (the root, and the
directories of keys with ``/``) is fsynced into its parent, or a power cut could lose a
directory together with the objects renamed into it.

A file whose header is missing or whose length disagrees with its header was damaged or
written by something else: ``read``, ``head`` and writes raise :class:`CorruptObject`
for it and never overwrite it.

``delete`` unlinks the file under the same lock (so it never races a create of the key)
and fsyncs the directory; an absent key is no error.

A writer killed at any point leaves the object as it was (old) or renamed (new). What it
may leave behind is a partial ``.osq-tmp``; only a lock holder writes that file, so the
next writer simply truncates it. Names starting with ``.osq-`` are never keys
(:mod:`osqueue_io.storage.keys`), so ``list`` and ``read`` never see them.

Limits: ``flock`` is advisory and works between processes of one host; it is not
reliable on NFS and similar network filesystems. A key cannot be both an object and a
"directory" of other keys (``a`` and ``a/b``), as it can on object stores.
"""

from __future__ import annotations

import builtins
import errno
import os
import secrets
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import anyio
import attrs

from osqueue_io.storage.base import (
    DEFAULT_READ_CONCURRENCY,
    as_seconds,
    check_list_limit,
    read_concurrently,
)
from osqueue_io.storage.errors import (
    AlreadyExists,
    CorruptObject,
    InvalidKey,
    OutcomeUnknown,
    ReadFailed,
    StorageConfigError,
    WriteConflict,
    WriteNotApplied,
)
from osqueue_io.storage.keys import RESERVED_SEGMENT_PREFIX, check_key, check_prefix
from osqueue_io.storage.local_lock import DEFAULT_LOCK_TIMEOUT, directory_lock
from osqueue_io.storage.version import ObjectVersion, StoredObject

_MAGIC = b"osqueue-object-v1"
_LOCK_NAME = RESERVED_SEGMENT_PREFIX + "lock"
_TEMP_NAME = RESERVED_SEGMENT_PREFIX + "tmp"
# Long enough for the magic, a 20-digit counter, the nonce and a 20-digit length.
_MAX_HEADER = 128


@attrs.frozen
class _Header:
    counter: int
    token: str
    length: int


class LocalFileStore:
    """An :class:`~osqueue_io.storage.base.ObjectStore` in a local directory.

    Safe for any number of processes on one host sharing ``root``. Blocking file work
    runs in worker threads, off the event loop. Open it with ``open_store("file:///dir")``
    or a plain path, or construct it directly.

    ``lock_timeout`` bounds how long a write waits for another writer's lock on the
    key's directory before it fails with :class:`WriteNotApplied`; keep it well below
    the runtime's ``storage_timeout``, which cannot interrupt a waiting thread.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        create_root: bool = True,
        read_concurrency: int = DEFAULT_READ_CONCURRENCY,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    ) -> None:
        if read_concurrency < 1:
            raise ValueError("read_concurrency must be at least 1")
        timeout = as_seconds(lock_timeout)
        if timeout is None or timeout == 0:
            raise ValueError("lock_timeout must be a positive, finite number of seconds")
        path = Path(root).expanduser().absolute()
        if path.exists() and not path.is_dir():
            raise StorageConfigError(f"the storage path {str(path)!r} is not a directory")
        if not path.exists():
            if not create_root:
                raise StorageConfigError(f"the storage directory {str(path)!r} does not exist")
            _create_root(path)
        self._root = path
        self._read_concurrency = read_concurrency
        self._lock_timeout = timeout

    @property
    def root(self) -> Path:
        """The directory holding the objects."""
        return self._root

    @property
    def url(self) -> str:
        """The root as a ``file://`` URL, for logs."""
        return self._root.as_uri()

    @property
    def lock_timeout(self) -> float:
        """Seconds a write waits for a directory's lock before it fails."""
        return self._lock_timeout

    def __repr__(self) -> str:
        return f"LocalFileStore({str(self._root)!r})"

    def path_of(self, key: str) -> Path:
        """The file that holds ``key``; raises :class:`InvalidKey` for a key that would escape."""
        return self._root.joinpath(*check_key(key).split("/"))

    async def read(self, key: str) -> StoredObject | None:
        """Return the object's bytes and version, or ``None`` if the key is absent."""
        path = self.path_of(key)
        return await anyio.to_thread.run_sync(self._read_sync, key, path)

    async def head(self, key: str) -> ObjectVersion | None:
        """Return the object's version, reading only its header line; ``None`` if absent."""
        path = self.path_of(key)
        return await anyio.to_thread.run_sync(self._head_sync, key, path)

    async def create(self, key: str, data: bytes) -> ObjectVersion:
        """Write ``data`` only if ``key`` is absent; ``AlreadyExists`` otherwise."""
        path = self.path_of(key)
        return await anyio.to_thread.run_sync(self._write_sync, key, path, data, None)

    async def update(self, key: str, data: bytes, expected: ObjectVersion) -> ObjectVersion:
        """Replace the object only if it is still at ``expected``; ``WriteConflict`` otherwise."""
        path = self.path_of(key)
        return await anyio.to_thread.run_sync(self._write_sync, key, path, data, expected)

    async def delete(self, key: str) -> None:
        """Remove the object at ``key`` (under its directory's lock); absent is no error."""
        path = self.path_of(key)
        await anyio.to_thread.run_sync(self._delete_sync, key, path)

    async def list(
        self, prefix: str, *, limit: int | None = None, start_after: str | None = None
    ) -> list[str]:
        """Return the sorted keys under ``prefix`` (whole segments; ``""`` for all).

        With ``limit``, the first ``limit`` of them in sorted order (after
        ``start_after``, if given): directories are walked in that order and the walk
        stops as soon as it has enough.
        """
        relative = check_prefix(prefix)
        wanted = check_list_limit(limit)
        return await anyio.to_thread.run_sync(self._list_sync, relative, wanted, start_after)

    async def read_many(self, keys: Sequence[str]) -> dict[str, StoredObject | None]:
        """Read several keys concurrently (bounded); absent keys map to ``None``."""
        return await read_concurrently(self.read, keys, self._read_concurrency)

    async def aclose(self) -> None:
        """Nothing to release: no file stays open between calls."""

    # -- blocking work, run in worker threads ------------------------------------------

    def _read_sync(self, key: str, path: Path) -> StoredObject | None:
        try:
            with path.open("rb") as file:
                raw = file.read()
        except _ABSENT:
            return None
        except OSError as error:
            raise ReadFailed(repr(key), f"{path}: {error}") from error
        newline = raw.find(b"\n", 0, _MAX_HEADER)
        line = raw[: newline + 1] if newline >= 0 else raw[:_MAX_HEADER]
        header = _parse_frame(key, path, line, len(raw))
        return StoredObject(
            data=raw[len(line) :], version=ObjectVersion(e_tag=header.token, version=None)
        )

    def _head_sync(self, key: str, path: Path) -> ObjectVersion | None:
        try:
            header = _read_frame(key, path)
        except OSError as error:
            raise ReadFailed(repr(key), f"{path}: {error}") from error
        return None if header is None else ObjectVersion(e_tag=header.token, version=None)

    def _write_sync(
        self, key: str, path: Path, data: bytes, expected: ObjectVersion | None
    ) -> ObjectVersion:
        operation = "create" if expected is None else "update"
        directory = path.parent
        try:
            self._make_directories(key, directory)
        except OSError as error:
            raise WriteNotApplied(key, operation, f"{directory}: {error}") from error
        with directory_lock(
            directory / _LOCK_NAME, timeout=self._lock_timeout, key=key, operation=operation
        ):
            return self._write_locked(key, path, data, expected)

    def _write_locked(
        self, key: str, path: Path, data: bytes, expected: ObjectVersion | None
    ) -> ObjectVersion:
        operation = "create" if expected is None else "update"
        if path.is_dir():
            raise InvalidKey(key, "the local store holds other keys under it (it is a directory)")
        try:
            current = _read_frame(key, path)
        except OSError as error:
            raise WriteNotApplied(key, operation, f"{path}: {error}") from error
        if expected is None:
            if current is not None:
                raise AlreadyExists(key)
        elif current is None or current.token != expected.e_tag:
            raise WriteConflict(key, expected)
        counter = (current.counter if current is not None else 0) + 1
        nonce = secrets.token_hex(8)
        header = b"%s %d %s %d\n" % (_MAGIC, counter, nonce.encode(), len(data))
        temp = path.parent / _TEMP_NAME
        try:
            _write_file_durably(temp, header, data)
            os.replace(temp, path)
        except OSError as error:
            # The rename is the commit point: before it, the object is untouched.
            raise WriteNotApplied(key, operation, f"{path}: {error}") from error
        try:
            _fsync_directory(path.parent)
        except OSError as error:
            raise OutcomeUnknown(
                key, operation, f"renamed into place but the directory fsync failed: {error}"
            ) from error
        return ObjectVersion(e_tag=f"{counter}-{nonce}", version=None)

    def _delete_sync(self, key: str, path: Path) -> None:
        directory = path.parent
        if not directory.is_dir():
            return  # no directory, no object under the key
        with directory_lock(
            directory / _LOCK_NAME, timeout=self._lock_timeout, key=key, operation="delete"
        ):
            try:
                path.unlink()
            except _ABSENT:
                return
            except OSError as error:
                raise WriteNotApplied(key, "delete", f"{path}: {error}") from error
            try:
                _fsync_directory(directory)
            except OSError as error:
                raise OutcomeUnknown(
                    key, "delete", f"unlinked but the directory fsync failed: {error}"
                ) from error

    def _make_directories(self, key: str, directory: Path) -> None:
        """Create the key's missing parent directories, each made durable in its parent."""
        if directory.is_dir():
            return
        try:
            _make_directories_durably(self._root, directory.relative_to(self._root).parts)
        except NotADirectoryError as error:
            part = Path(str(error.filename)).name
            raise InvalidKey(
                key, f"{part!r} on its path is an object, so it cannot hold other keys"
            ) from None

    def _list_sync(
        self, prefix: str, limit: int | None, start_after: str | None
    ) -> builtins.list[str]:
        base = self._root.joinpath(*prefix.split("/")) if prefix else self._root
        keys: builtins.list[str] = []
        try:
            for key in _walk_sorted(base, prefix):
                if start_after is not None and key <= start_after:
                    continue
                keys.append(key)
                if limit is not None and len(keys) >= limit:
                    break
        except (FileNotFoundError, NotADirectoryError):
            return []  # the prefix is absent, or is an object: no keys under it
        except OSError as error:
            raise ReadFailed(f"the listing of {prefix!r}", str(error)) from error
        return keys


# Opening these for a key means the key is absent (a directory named like the key holds
# other keys; an object on the key's path cannot hold it).
_ABSENT = (FileNotFoundError, NotADirectoryError, IsADirectoryError)


def _read_frame(key: str, path: Path) -> _Header | None:
    """Read and check the header of the file holding ``key``; ``None`` if there is none.

    Reads only the header line; the length is checked against the file's size. Raises
    :class:`CorruptObject` for a damaged file, :class:`OSError` if it cannot be read.
    """
    try:
        with path.open("rb") as file:
            line = file.readline(_MAX_HEADER)
            size = os.fstat(file.fileno()).st_size
    except _ABSENT:
        return None
    return _parse_frame(key, path, line, size)


def _parse_frame(key: str, path: Path, line: bytes, size: int) -> _Header:
    """Check a file's header ``line`` (with its newline) against the file's ``size``."""
    if not line.endswith(b"\n"):
        raise CorruptObject(key, f"{path} has no osqueue-object-v1 header line")
    fields = line[:-1].split(b" ")
    if len(fields) != 4 or fields[0] != _MAGIC:
        raise CorruptObject(key, f"{path} has no osqueue-object-v1 header")
    try:
        counter, nonce, length = int(fields[1]), fields[2].decode("ascii"), int(fields[3])
    except (ValueError, UnicodeDecodeError):
        raise CorruptObject(key, f"{path} has a malformed osqueue-object-v1 header") from None
    data_bytes = size - len(line)
    if data_bytes != length:
        raise CorruptObject(
            key,
            f"{path} holds {data_bytes} data bytes but its header says {length}: it was "
            "truncated or changed outside osqueue",
        )
    return _Header(counter=counter, token=f"{counter}-{nonce}", length=length)


def _walk_sorted(directory: Path, relative: str, *, top: bool = True) -> Iterator[str]:
    """Yield the keys under ``directory`` (whose key prefix is ``relative``) in sorted order.

    Sorting each directory's entries with a ``/`` after directory names makes a
    depth-first walk produce keys in the order ``sorted`` would give (``a-b`` before
    ``a/c``), so a limited listing can stop after the first ``limit`` keys. Only the
    ``top`` directory missing is an error (:class:`FileNotFoundError`).
    """
    try:
        with os.scandir(directory) as scan:
            entries = [
                (entry.name + "/" if entry.is_dir(follow_symlinks=False) else entry.name, entry)
                for entry in scan
                if not entry.name.startswith(RESERVED_SEGMENT_PREFIX)
            ]
    except (FileNotFoundError, NotADirectoryError):
        if top:
            raise
        return  # removed by hand while we walked: it holds no keys any more
    entries.sort(key=lambda pair: pair[0])
    for name, entry in entries:
        key = f"{relative}/{entry.name}" if relative else entry.name
        if name.endswith("/"):
            yield from _walk_sorted(Path(entry.path), key, top=False)
        elif not entry.is_dir():  # a symlink to a directory is not walked, nor a key
            yield key


def _write_file_durably(path: Path, header: bytes, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
    try:
        with os.fdopen(fd, "wb", closefd=False) as file:
            file.write(header)
            file.write(data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _create_root(path: Path) -> None:
    """Create the store's root and its missing parents, each made durable in its parent."""
    existing, missing = path, list[str]()
    while not existing.exists() and existing != existing.parent:
        existing, missing = existing.parent, [existing.name, *missing]
    try:
        _make_directories_durably(existing, missing)
    except OSError as error:
        raise StorageConfigError(
            f"cannot create the storage directory {str(path)!r}: {error}"
        ) from error


def _make_directories_durably(base: Path, parts: Iterable[str]) -> None:
    """Create ``base/parts[0]/parts[1]/...`` and fsync each directory into its parent.

    A directory that already exists is fsynced into its parent too: another process may
    have just created it and died before its own fsync. Raises :class:`NotADirectoryError`
    (its ``filename`` the path) where a file stands in the way.
    """
    current = base
    for part in parts:
        parent, current = current, current / part
        try:
            current.mkdir()
        except FileExistsError:
            if not current.is_dir():
                raise NotADirectoryError(
                    errno.ENOTDIR, "a file stands where a directory is needed", str(current)
                ) from None
        _fsync_directory(parent)


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
