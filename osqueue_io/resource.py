"""The ``async with`` shape shared by the runtime, the embedded queue and the worker."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class AsyncResource:
    """Something opened with ``async with``: :meth:`open` on entry, :meth:`aclose` on
    exit. Both must be called from the same task (anyio's task groups require it)."""

    async def open(self) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
