"""What a job handler is, how the runner calls it, and what its return value becomes."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import TypeAlias, TypeVar

from osqueue_io.client import ClaimedJob

__all__ = ["Handler", "is_async_handler", "job_result"]

T = TypeVar("T")

#: A job handler: ``async def handler(job) -> bytes | None``, or a plain function with
#: the same signature (run in a worker thread). Its return value is the job's result.
Handler: TypeAlias = Callable[[ClaimedJob[T]], Awaitable[bytes | None] | bytes | None]


def is_async_handler(handler: Callable[..., object]) -> bool:
    """Whether ``handler`` is an ``async def`` function (or ``functools.partial`` of one,
    or an object whose class's ``__call__`` is one): those run on the event loop, any
    other callable in a worker thread."""
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
        type(handler).__call__
    )


def job_result(value: object) -> bytes | None:
    """The job result a handler's return ``value`` stands for: ``bytes`` as they are
    (``bytearray`` and ``memoryview`` copied into bytes), None for none. Anything else
    raises ``TypeError`` saying what to do instead."""
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    if inspect.isawaitable(value):
        if inspect.iscoroutine(value):
            value.close()  # never awaited: say so here rather than in a warning at exit
        raise TypeError(
            "the handler is a plain function that returned an awaitable: declare it "
            "`async def` so that it runs on the event loop"
        )
    raise TypeError(
        f"the handler returned {type(value).__name__}: return bytes or None "
        "(encode other results yourself, e.g. json.dumps(result).encode())"
    )
