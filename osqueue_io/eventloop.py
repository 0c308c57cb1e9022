"""Which asyncio event loop the broker and the worker runner run on.

Both need asyncio (grpclib and obstore do). `uvloop <https://github.com/MagicStack/uvloop>`_
is a drop-in asyncio loop written on libuv, an optional extra:
``pip install 'osqueue[fast]'``. Measured on the project machine it made no difference
beyond the noise to the broker's CPU per call (docs/performance.md, "uvloop"): most of
that time is in the pure-Python HTTP/2 stack and in osqueue, not in the loop. So the
default stays asyncio's own loop, and uvloop is there to try.

The choice is ``asyncio``, ``uvloop`` (an error if it is not installed) or ``auto``
(uvloop when installed): the command lines' ``--event-loop`` flag, else the
``OSQUEUE_EVENT_LOOP`` environment variable, else ``asyncio``. Code that embeds the
queue in its own program runs on whatever loop that program chose.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio

__all__ = ["CHOICES", "ENV_VAR", "backend_options", "resolve", "run"]

T = TypeVar("T")

#: The environment variable naming the loop when no flag does.
ENV_VAR = "OSQUEUE_EVENT_LOOP"
CHOICES = ("auto", "asyncio", "uvloop")


def uvloop_installed() -> bool:
    return importlib.util.find_spec("uvloop") is not None


def resolve(choice: str | None = None) -> str:
    """The loop to run on, ``asyncio`` or ``uvloop``, for ``choice`` (None: the
    environment variable, else ``asyncio``). ValueError for an unknown choice, or for
    ``uvloop`` when it is not installed."""
    choice = choice or os.environ.get(ENV_VAR) or "asyncio"
    if choice not in CHOICES:
        raise ValueError(f"event loop {choice!r} is not one of {', '.join(CHOICES)}")
    if choice == "asyncio":
        return "asyncio"
    if uvloop_installed():
        return "uvloop"
    if choice == "uvloop":
        raise ValueError("uvloop is not installed: pip install 'osqueue[fast]'")
    return "asyncio"


def backend_options(loop: str) -> dict[str, object]:
    """anyio's asyncio backend options for ``loop`` (a :func:`resolve` answer)."""
    return {"use_uvloop": True} if loop == "uvloop" else {}


def run(func: Callable[[], Awaitable[T]], loop: str) -> T:
    """``func()`` on a new event loop of kind ``loop`` (a :func:`resolve` answer)."""
    return anyio.run(func, backend="asyncio", backend_options=backend_options(loop))
