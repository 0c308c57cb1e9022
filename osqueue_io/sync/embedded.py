"""The blocking ``EmbeddedQueue``: the async one, driven through a portal.

::

    with EmbeddedQueue("./queue-data", Task) as queue:
        queue.push(Task("build-index"))
        job = queue.claim("worker-1", wait=5)
        if job is not None:
            with queue.processing(job):
                build(job.item)
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Generic, TypeVar

from osqueue_core import BrokerStats
from osqueue_io.embedded import ClaimedJob
from osqueue_io.embedded import EmbeddedQueue as AsyncEmbeddedQueue
from osqueue_io.keepalive import Lease
from osqueue_io.storage import ObjectStore
from osqueue_io.sync.portal import PortalShell

T = TypeVar("T")


class EmbeddedQueue(PortalShell, Generic[T]):
    """Blocking twin of :class:`osqueue_io.EmbeddedQueue`; same arguments, same methods.

    Safe to call from several threads: every call is handed to the one event loop.
    """

    def __init__(
        self, storage: str | os.PathLike[str] | ObjectStore, item_type: type[T], **options: Any
    ) -> None:
        self.async_queue: AsyncEmbeddedQueue[T] = AsyncEmbeddedQueue(storage, item_type, **options)
        super().__init__(self.async_queue)

    def stats(self) -> BrokerStats:
        # Read on the event loop's thread: the broker is only ever touched there.
        return self.portal.call(self.async_queue.stats)

    def push(self, item: T) -> str:
        return self.portal.call(self.async_queue.push, item)

    def push_many(self, items: Sequence[T]) -> list[str]:
        return self.portal.call(self.async_queue.push_many, items)

    def claim(self, worker_id: str, *, wait: float = 0.0) -> ClaimedJob[T] | None:
        return self.portal.call(lambda: self.async_queue.claim(worker_id, wait=wait))

    def heartbeat(self, job: ClaimedJob[T]) -> float:
        return self.portal.call(self.async_queue.heartbeat, job)

    def complete(self, job: ClaimedJob[T]) -> None:
        self.portal.call(self.async_queue.complete, job)

    def fail(self, job: ClaimedJob[T], error: str = "", *, requeue: bool = True) -> bool:
        return self.portal.call(lambda: self.async_queue.fail(job, error, requeue=requeue))

    def keep_alive(self, job: ClaimedJob[T]) -> AbstractContextManager[Lease]:
        """Heartbeat in the background while the block runs. A blocking block cannot be
        cancelled: check ``lease.lost`` (or ``lease.check()``) in long loops; on exit
        ``LeaseLost`` is raised if the lease was lost."""
        return self.portal.wrap_async_context_manager(self.async_queue.keep_alive(job))

    @contextmanager
    def processing(self, job: ClaimedJob[T], *, requeue_on_error: bool = True) -> Iterator[Lease]:
        """Like the async ``processing``: complete on success, fail on error."""
        manager = self.async_queue.processing(job, requeue_on_error=requeue_on_error)
        with self.portal.wrap_async_context_manager(manager) as lease:
            yield lease
