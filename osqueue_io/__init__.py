"""osqueue's I/O shells: storage, the embedded queue, the gRPC broker and worker client.

Start with :class:`EmbeddedQueue` (async) or :class:`osqueue_io.sync.EmbeddedQueue`
(blocking); open storage with :func:`open_store`. For the distributed mode, run the gRPC
broker (``python -m osqueue_io.server``) and connect with :class:`Worker` (or
:class:`osqueue_io.sync.Worker`).
"""

from osqueue_io.embedded import ClaimedJob, EmbeddedQueue
from osqueue_io.keepalive import Lease
from osqueue_io.payload import PayloadCodec, PayloadDecodeError
from osqueue_io.runtime import BrokerRuntime
from osqueue_io.storage import ObjectStore, open_store
from osqueue_io.worker import QueueStats, RemoteJob, Worker

__all__ = [
    "BrokerRuntime",
    "ClaimedJob",
    "EmbeddedQueue",
    "Lease",
    "ObjectStore",
    "PayloadCodec",
    "PayloadDecodeError",
    "QueueStats",
    "RemoteJob",
    "Worker",
    "open_store",
]
