"""The one piece every blocking twin shares: an event loop in a thread, and a portal.

A :class:`PortalShell` owns an async context manager (the async queue or worker),
enters it on a private asyncio event loop running in a background thread, and hands
every blocking call to that loop. Entering and leaving happen in one task, as anyio
requires of task groups.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager, ExitStack
from types import TracebackType
from typing import Any, Self

from anyio.from_thread import BlockingPortal, start_blocking_portal


class PortalShell:
    """Base of the blocking twins: ``with`` opens the wrapped async object, ``portal``
    runs coroutines on its loop. Safe to call from several threads."""

    def __init__(self, inner: AbstractAsyncContextManager[Any]) -> None:
        self._inner = inner
        self._stack: ExitStack | None = None
        self._portal: BlockingPortal | None = None

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def open(self) -> None:
        if self._stack is not None:
            raise RuntimeError(f"the {type(self).__name__} is already open")
        stack = ExitStack()
        try:
            # grpclib and obstore's async API need asyncio.
            portal = stack.enter_context(start_blocking_portal("asyncio"))
            stack.enter_context(portal.wrap_async_context_manager(self._inner))
        except BaseException:
            stack.close()
            raise
        self._stack, self._portal = stack, portal

    def close(self) -> None:
        stack, self._stack, self._portal = self._stack, None, None
        if stack is not None:
            stack.close()

    @property
    def portal(self) -> BlockingPortal:
        if self._portal is None:
            name = type(self).__name__
            raise RuntimeError(f"the {name} is not open: use `with {name}(...)`")
        return self._portal
