"""The blocking ``RemoteQueue``: the async one, driven through a portal.

::

    with RemoteQueue("broker-host:9090", Task) as queue:
        queue.push(Task("build-index"), priority=5)
        job = queue.claim(wait=5)
        if job is not None:
            with queue.processing(job):
                build(job.item)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from osqueue_io.remote import QueueStats
from osqueue_io.remote import RemoteQueue as AsyncRemoteQueue
from osqueue_io.sync.queue import BlockingQueue

T = TypeVar("T")


class RemoteQueue(BlockingQueue[T, AsyncRemoteQueue[T]]):
    """Blocking twin of :class:`osqueue_io.RemoteQueue`; same arguments, same methods
    (without ``await``), same checks before anything is sent.

    Safe to call from several threads: every call is handed to the one event loop.
    """

    def __init__(
        self, address: str | Sequence[str] | None, item_type: type[T], **options: Any
    ) -> None:
        super().__init__(AsyncRemoteQueue(address, item_type, **options))

    def stats(self) -> QueueStats:
        return self.portal.call(self.async_queue.stats)
