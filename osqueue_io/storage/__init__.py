"""Compare-and-swap object storage: one interface over S3, GCS, Azure, memory and a directory.

Open a store with :func:`open_store`, then ``read`` / ``head`` / ``create`` / ``update`` /
``list`` / ``read_many`` through the :class:`ObjectStore` protocol. Every failure is a
:class:`StorageError`; its class says whether a write landed. :class:`FaultyStore` wraps
any store to inject the failures real storage has, for tests. See ``docs/storage.md``.
"""

from osqueue_io.storage.base import ObjectStore
from osqueue_io.storage.errors import (
    AlreadyExists,
    CorruptObject,
    InvalidKey,
    ObjectNotFound,
    OutcomeUnknown,
    ReadFailed,
    StorageConfigError,
    StorageError,
    WriteConflict,
    WriteNotApplied,
)
from osqueue_io.storage.faults import FaultKind, Faults, FaultyStore, keys_under
from osqueue_io.storage.local import LocalFileStore
from osqueue_io.storage.obstore_store import ObstoreStore
from osqueue_io.storage.url import open_store
from osqueue_io.storage.version import ObjectVersion, StoredObject

__all__ = [
    "AlreadyExists",
    "CorruptObject",
    "FaultKind",
    "Faults",
    "FaultyStore",
    "InvalidKey",
    "LocalFileStore",
    "ObjectNotFound",
    "ObjectStore",
    "ObjectVersion",
    "ObstoreStore",
    "OutcomeUnknown",
    "ReadFailed",
    "StorageConfigError",
    "StorageError",
    "StoredObject",
    "WriteConflict",
    "WriteNotApplied",
    "keys_under",
    "open_store",
]
