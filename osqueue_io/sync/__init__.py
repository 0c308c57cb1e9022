"""Blocking twins of the async API, for plain scripts and threads.

Each is a thin portal into the async implementation running on an event loop in a
background thread (``anyio.from_thread.start_blocking_portal``), not a second
implementation.
"""

from osqueue_io.sync.embedded import EmbeddedQueue
from osqueue_io.sync.remote import RemoteQueue
from osqueue_io.sync.worker import Worker

__all__ = ["EmbeddedQueue", "RemoteQueue", "Worker"]
