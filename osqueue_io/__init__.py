"""osqueue's I/O shells: storage, the embedded queue, the gRPC broker and its clients.

Start with :class:`EmbeddedQueue` (async) or :class:`osqueue_io.sync.EmbeddedQueue`
(blocking); open storage with :func:`open_store`. For the distributed mode, run the gRPC
broker (``python -m osqueue_io.server``) and connect with :class:`RemoteQueue` (or
:class:`osqueue_io.sync.RemoteQueue`), which has the embedded queue's API
(:class:`JobQueue`); :class:`Worker` is its bytes-typed form. :func:`run_worker` runs a
handler on every job of either (``python -m osqueue_io.worker`` on the command line).
"""

from osqueue_io.client import ClaimedJob, JobQueue, QueueInfo
from osqueue_io.embedded import EmbeddedQueue
from osqueue_io.keepalive import Lease
from osqueue_io.payload import PayloadCodec, PayloadDecodeError
from osqueue_io.remote import QueueStats, RemoteJob, RemoteQueue, Worker
from osqueue_io.runner import RunSummary, run_worker
from osqueue_io.runtime import BrokerRuntime
from osqueue_io.storage import ObjectStore, open_store

__all__ = [
    "BrokerRuntime",
    "ClaimedJob",
    "EmbeddedQueue",
    "JobQueue",
    "Lease",
    "ObjectStore",
    "PayloadCodec",
    "PayloadDecodeError",
    "QueueInfo",
    "QueueStats",
    "RemoteJob",
    "RemoteQueue",
    "RunSummary",
    "Worker",
    "open_store",
    "run_worker",
]
