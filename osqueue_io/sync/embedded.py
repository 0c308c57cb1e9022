"""The blocking ``EmbeddedQueue``: the async one, driven through a portal.

::

    with EmbeddedQueue("./queue-data", Task) as queue:
        queue.push(Task("build-index"), queue="indexing")
        job = queue.claim(queues=["indexing"], wait=5)
        if job is not None:
            with queue.processing(job):
                build(job.item)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, TypeVar

from osqueue_core import DEFAULT_QUEUE, BrokerStats
from osqueue_io.client import ClaimedJob
from osqueue_io.embedded import EmbeddedQueue as AsyncEmbeddedQueue
from osqueue_io.storage import ObjectStore
from osqueue_io.sync.queue import BlockingQueue

T = TypeVar("T")


class EmbeddedQueue(BlockingQueue[T, AsyncEmbeddedQueue[T]]):
    """Blocking twin of :class:`osqueue_io.EmbeddedQueue`; same arguments, same methods
    (the ``JobQueue`` API without ``await``).

    Safe to call from several threads: every call is handed to the one event loop.
    """

    def __init__(
        self, storage: str | os.PathLike[str] | ObjectStore, item_type: type[T], **options: Any
    ) -> None:
        super().__init__(AsyncEmbeddedQueue(storage, item_type, **options))

    def stats(self) -> BrokerStats:
        # Read on the event loop's thread: the broker is only ever touched there.
        return self.portal.call(self.async_queue.stats)

    def claim(  # one more (optional) parameter first: still a valid override
        self,
        worker_id: str | None = None,
        *,
        queues: Sequence[str] = (DEFAULT_QUEUE,),
        wait: float = 0.0,
    ) -> ClaimedJob[T] | None:
        return self.portal.call(lambda: self.async_queue.claim(worker_id, queues=queues, wait=wait))
