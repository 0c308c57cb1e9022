"""Which asyncio event loop the broker and the worker runner run on.

Both need asyncio (grpclib and obstore do). `uvloop <https://github.com/MagicStack/uvloop>`_
is a drop-in asyncio loop written on libuv; with it the broker spends less CPU per call
in socket I/O, timers and callbacks (docs/performance.md has the figures). It is an
optional extra: ``pip install 'osqueue[fast]'``.

The choice is ``auto`` (uvloop when it is installed, else asyncio's own loop),
``asyncio`` or ``uvloop`` (an error if it is not installed): the command lines'
``--event-loop`` flag, else the ``OSQUEUE_EVENT_LOOP`` environment variable, else
``auto``. Code that embeds the queue in its own program runs on whatever loop that
program chose.
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
    environment variable, else ``auto``). ValueError for an unknown choice, or for
    ``uvloop`` when it is not installed."""
    choice = choice or os.environ.get(ENV_VAR) or "auto"
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
