"""``osqueue_io.worker``: the remote worker client, where it has always been imported from.

:class:`Worker` and its companions live in :mod:`osqueue_io.remote` (beside the typed
:class:`~osqueue_io.remote.RemoteQueue`); they are re-exported here so that
``from osqueue_io.worker import Worker`` keeps working.
"""

from osqueue_io.remote import (
    DEFAULT_LEASE_TIMEOUT,
    QueueStats,
    RemoteJob,
    Worker,
    default_worker_id,
    parse_address,
)

__all__ = [
    "DEFAULT_LEASE_TIMEOUT",
    "QueueStats",
    "RemoteJob",
    "Worker",
    "default_worker_id",
    "parse_address",
]
