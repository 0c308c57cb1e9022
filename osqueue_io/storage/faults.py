"""A fault-injecting wrapper around any :class:`ObjectStore`, for testing what runs on it.

Real object storage is slow at times, refuses requests, loses them, loses their answers,
lands them late, and is written by someone else between your read and your write. A
runtime that copes with all of that in production has to meet it in tests first: wrap a
real store (memory, a directory, moto, ...) in a :class:`FaultyStore`, say how often each
fault happens with a :class:`Faults` value, and seed it::

    store = FaultyStore(open_store("memory://"), Faults(write_lost=0.05, rogue_writer=0.02), seed=7)

Faults never break the store's contract: every error raised is one the real backends
raise for the same situation, and says truthfully whether the write landed (an
``OutcomeUnknown`` is always truthful: it promises nothing).

Determinism: every decision comes from one ``random.Random(seed)``, drawn when a call
starts, before its first ``await``, in a fixed pattern for each kind of call. The same
seed, the same :class:`Faults` and the same sequence of calls (in the order they start)
give the same faults. Calls on keys that ``Faults.keys`` excludes draw nothing.
"""

from __future__ import annotations

import asyncio
import builtins
import collections
import enum
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import anyio
import attrs

from osqueue_io.storage.base import ObjectStore, as_seconds, check_list_limit
from osqueue_io.storage.errors import (
    AlreadyExists,
    OutcomeUnknown,
    ReadFailed,
    StorageError,
    WriteConflict,
    WriteNotApplied,
)
from osqueue_io.storage.keys import check_key, check_prefix
from osqueue_io.storage.version import ObjectVersion, StoredObject

_T = TypeVar("_T")


class FaultKind(enum.StrEnum):
    """What :attr:`FaultyStore.counters` counts: each injected fault, and what became of
    late writes."""

    #: A call slept for injected latency before it went on.
    DELAYED = "delayed"
    #: A read, head, list or read_many raised ``ReadFailed``; the inner store was not asked.
    READ_FAILED = "read_failed"
    #: A write raised ``WriteNotApplied`` without reaching the inner store.
    WRITE_NOT_APPLIED = "write_not_applied"
    #: A write raised ``OutcomeUnknown`` without reaching the inner store (request lost).
    WRITE_LOST = "write_lost"
    #: A write landed in the inner store, then raised ``OutcomeUnknown`` (answer lost).
    WRITE_ACK_LOST = "write_ack_lost"
    #: A write raised ``OutcomeUnknown`` at once and was sent to the inner store later.
    LATE_WRITE = "late_write"
    #: A late write landed.
    LATE_WRITE_LANDED = "late_write_landed"
    #: A late write was refused (``WriteConflict`` / ``AlreadyExists``): the object had moved on.
    LATE_WRITE_REFUSED = "late_write_refused"
    #: A late write failed otherwise in the inner store (any other ``StorageError``).
    LATE_WRITE_FAILED = "late_write_failed"
    #: A late write was dropped by ``aclose`` before its delay had passed.
    LATE_WRITE_CANCELLED = "late_write_cancelled"
    #: Before an update, a second writer rewrote the object (same bytes, new version).
    ROGUE_WRITE = "rogue_write"


def _probability(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValueError(f"Faults.{attribute.name} is a probability: a number from 0 to 1")


def _duration(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if as_seconds(value) is None:
        raise ValueError(f"Faults.{attribute.name} is a duration: a finite number of seconds >= 0")


@attrs.frozen(kw_only=True)
class Faults:
    """Which faults a :class:`FaultyStore` injects, and how often. All default to none.

    Probabilities are per call. A write (a delete too) meets at most one of
    ``write_not_applied``, ``write_lost``, ``write_ack_lost`` and ``late_write`` (so they
    add up to at most 1); ``rogue_writer`` is drawn separately, before an update, and the
    update then conflicts.
    Durations are seconds: each call first sleeps ``latency`` plus a uniform share of
    ``latency_jitter``; a late write lands ``late_write_delay`` plus a uniform share of
    ``late_write_jitter`` after it was reported.

    ``keys`` restricts every fault (latency included) to the keys it accepts; for
    ``list`` it is asked about the prefix. :func:`keys_under` builds one for a prefix.
    """

    #: Seconds every call waits before it runs.
    latency: float = attrs.field(default=0.0, validator=_duration)
    #: Up to this many more seconds, drawn uniformly per call.
    latency_jitter: float = attrs.field(default=0.0, validator=_duration)
    #: A read, head, list or read_many raises ``ReadFailed``.
    read_failure: float = attrs.field(default=0.0, validator=_probability)
    #: A write raises ``WriteNotApplied``; nothing is written.
    write_not_applied: float = attrs.field(default=0.0, validator=_probability)
    #: A write raises ``OutcomeUnknown``; nothing is written.
    write_lost: float = attrs.field(default=0.0, validator=_probability)
    #: A write lands, then raises ``OutcomeUnknown``.
    write_ack_lost: float = attrs.field(default=0.0, validator=_probability)
    #: A write raises ``OutcomeUnknown`` at once and is sent (still conditional) later.
    late_write: float = attrs.field(default=0.0, validator=_probability)
    #: Seconds after which a late write is sent.
    late_write_delay: float = attrs.field(default=0.1, validator=_duration)
    #: Up to this many more seconds, drawn uniformly per late write.
    late_write_jitter: float = attrs.field(default=0.0, validator=_duration)
    #: Before an update, another writer rewrites the object's current bytes.
    rogue_writer: float = attrs.field(default=0.0, validator=_probability)
    #: Only keys (and list prefixes) for which this returns True meet faults.
    keys: Callable[[str], bool] | None = None

    def __attrs_post_init__(self) -> None:
        if self.write_not_applied + self.write_lost + self.write_ack_lost + self.late_write > 1:
            raise ValueError(
                "Faults: write_not_applied + write_lost + write_ack_lost + late_write must "
                "add up to at most 1 (a write meets at most one of them)"
            )


def keys_under(prefix: str) -> Callable[[str], bool]:
    """A ``Faults.keys`` filter: the keys under ``prefix`` (whole segments) and the prefix."""
    stem = check_prefix(prefix)
    if not stem:
        return lambda key: True
    return lambda key: key == stem or key.startswith(stem + "/")


class _WriteFault(enum.Enum):
    NOT_APPLIED = FaultKind.WRITE_NOT_APPLIED
    LOST = FaultKind.WRITE_LOST
    ACK_LOST = FaultKind.WRITE_ACK_LOST
    LATE = FaultKind.LATE_WRITE


@attrs.frozen
class _LateWrite:
    """A late write in flight: cancelling ``delay_scope`` drops it if it has not been sent."""

    delay_scope: anyio.CancelScope


class FaultyStore:
    """An :class:`ObjectStore` that passes every call to ``inner``, injecting ``faults``.

    ``seed`` makes the faults reproducible (print it with a failing soak's counters).
    ``sleep`` is how the store waits, for latency and late writes; tests may pass one
    they control. Late writes run as asyncio tasks owned by the store (osqueue's async
    code runs on anyio's asyncio backend): :meth:`settle` waits for them; :meth:`aclose`
    drops those still waiting out their delay, waits for those being sent, then closes
    ``inner``. Use one FaultyStore per event loop.
    """

    def __init__(
        self,
        inner: ObjectStore,
        faults: Faults,
        *,
        seed: int,
        sleep: Callable[[float], Awaitable[Any]] = anyio.sleep,
    ) -> None:
        self._inner = inner
        self._faults = faults
        self._seed = seed
        self._random = random.Random(seed)
        self._sleep = sleep
        self._counters: collections.Counter[FaultKind] = collections.Counter()
        self._late: dict[asyncio.Task[None], _LateWrite] = {}
        self._late_errors: builtins.list[BaseException] = []

    @property
    def inner(self) -> ObjectStore:
        """The wrapped store: read it to see what really landed."""
        return self._inner

    @property
    def faults(self) -> Faults:
        """What this store injects. Assign a new :class:`Faults` to change it from the next
        call on (a storage outage that begins or ends mid-test); calls already under way
        keep what they drew."""
        return self._faults

    @faults.setter
    def faults(self, faults: Faults) -> None:
        self._faults = faults

    @property
    def seed(self) -> int:
        """The seed of the store's random decisions."""
        return self._seed

    @property
    def url(self) -> str:
        """The inner store's URL behind a ``faulty+`` marker, for logs."""
        return f"faulty+{self._inner.url}"

    @property
    def counters(self) -> Mapping[str, int]:
        """How many faults of each :class:`FaultKind` so far (every kind listed, zeros too)."""
        return {kind.value: self._counters[kind] for kind in FaultKind}

    @property
    def pending_late_writes(self) -> int:
        """Late writes reported but not yet landed, refused or dropped."""
        return len(self._late)

    def __repr__(self) -> str:
        return f"FaultyStore({self._inner!r}, seed={self._seed})"

    # -- reads -------------------------------------------------------------------------

    async def read(self, key: str) -> StoredObject | None:
        """The inner ``read``, after injected latency; may raise an injected ``ReadFailed``."""
        await self._before_read(check_key(key))
        return await self._inner.read(key)

    async def head(self, key: str) -> ObjectVersion | None:
        """The inner ``head``, after injected latency; may raise an injected ``ReadFailed``."""
        await self._before_read(check_key(key))
        return await self._inner.head(key)

    async def list(
        self, prefix: str, *, limit: int | None = None, start_after: str | None = None
    ) -> builtins.list[str]:
        """The inner ``list``; ``Faults.keys`` is asked about ``prefix``."""
        check_prefix(prefix)
        check_list_limit(limit)
        await self._before_read(prefix, what=f"the listing of {prefix!r}")
        return await self._inner.list(prefix, limit=limit, start_after=start_after)

    async def read_many(self, keys: Sequence[str]) -> dict[str, StoredObject | None]:
        """The inner ``read_many``: one latency for the call, a failure draw per key."""
        for key in keys:
            check_key(key)
        chosen = [key for key in dict.fromkeys(keys) if self._applies(key)]
        delay = self._draw_delay() if chosen else 0.0
        failed = [key for key in chosen if self._draw(self._faults.read_failure)]
        await self._delay(delay)
        if failed:
            self._counters[FaultKind.READ_FAILED] += 1
            raise ReadFailed(repr(failed[0]), "injected fault: read_failed")
        return await self._inner.read_many(keys)

    async def _before_read(self, key: str, what: str | None = None) -> None:
        if not self._applies(key):
            return
        delay = self._draw_delay()
        fail = self._draw(self._faults.read_failure)
        await self._delay(delay)
        if fail:
            self._counters[FaultKind.READ_FAILED] += 1
            raise ReadFailed(what or repr(key), "injected fault: read_failed")

    # -- writes ------------------------------------------------------------------------

    async def create(self, key: str, data: bytes) -> ObjectVersion:
        """The inner ``create``, or one of the write faults instead."""
        return await self._write(check_key(key), data, None)

    async def update(self, key: str, data: bytes, expected: ObjectVersion) -> ObjectVersion:
        """The inner ``update``, maybe after a rogue writer, or one of the write faults."""
        return await self._write(check_key(key), data, expected)

    async def delete(self, key: str) -> None:
        """The inner ``delete``, or one of the write faults instead (a delete is a write
        without a precondition: no rogue writer)."""
        check_key(key)

        async def send() -> None:
            await self._inner.delete(key)

        if not self._applies(key):
            return await send()
        delay = self._draw_delay()
        fault = self._draw_write_fault()
        late_delay = self._draw_late_delay() if fault is _WriteFault.LATE else 0.0
        await self._delay(delay)
        return await self._faulted(key, "delete", fault, send, late_delay)

    async def _write(self, key: str, data: bytes, expected: ObjectVersion | None) -> ObjectVersion:
        async def send() -> ObjectVersion:
            return await self._send(key, data, expected)

        if not self._applies(key):
            return await send()
        delay = self._draw_delay()
        rogue = expected is not None and self._draw(self._faults.rogue_writer)
        fault = self._draw_write_fault()
        late_delay = self._draw_late_delay() if fault is _WriteFault.LATE else 0.0
        await self._delay(delay)
        if rogue:
            await self._rewrite_as_someone_else(key)
        operation = "create" if expected is None else "update"
        return await self._faulted(key, operation, fault, send, late_delay)

    async def _faulted(
        self,
        key: str,
        operation: str,
        fault: _WriteFault | None,
        send: Callable[[], Awaitable[_T]],
        late_delay: float,
    ) -> _T:
        """Run the write ``send`` as ``fault`` says (as is, when None)."""
        if fault is None:
            return await send()
        if fault is _WriteFault.ACK_LOST:
            # Should the inner write fail, its own error is the truthful answer: it propagates.
            await send()
        elif fault is _WriteFault.LATE:
            self._start_late_write(key, send, late_delay)
        self._counters[fault.value] += 1
        detail = f"injected fault: {fault.value.value}"
        if fault is _WriteFault.NOT_APPLIED:
            raise WriteNotApplied(key, operation, detail)
        raise OutcomeUnknown(key, operation, detail)

    async def _send(self, key: str, data: bytes, expected: ObjectVersion | None) -> ObjectVersion:
        if expected is None:
            return await self._inner.create(key, data)
        return await self._inner.update(key, data, expected)

    async def _rewrite_as_someone_else(self, key: str) -> None:
        """Write the object's current bytes back through the inner store: a new version
        (except on S3, whose ETag is a content hash), exactly what a second writer makes."""
        try:
            current = await self._inner.read(key)
            if current is None:
                return  # nothing to rewrite: the caller's update conflicts anyway
            await self._inner.update(key, current.data, current.version)
        except StorageError:
            return  # the rogue writer's own bad luck is not the caller's
        self._counters[FaultKind.ROGUE_WRITE] += 1

    # -- late writes -------------------------------------------------------------------

    def _start_late_write(self, key: str, send: Callable[[], Awaitable[Any]], delay: float) -> None:
        late = _LateWrite(delay_scope=anyio.CancelScope())
        task = asyncio.get_running_loop().create_task(
            self._land_late(late, send, delay), name=f"late write of {key!r}"
        )
        self._late[task] = late
        task.add_done_callback(self._forget_late_write)

    async def _land_late(
        self, late: _LateWrite, send: Callable[[], Awaitable[Any]], delay: float
    ) -> None:
        with late.delay_scope:
            await self._sleep(delay)
        if late.delay_scope.cancel_called:
            self._counters[FaultKind.LATE_WRITE_CANCELLED] += 1
            return
        try:
            await send()
        except (WriteConflict, AlreadyExists):
            self._counters[FaultKind.LATE_WRITE_REFUSED] += 1
        except StorageError:
            self._counters[FaultKind.LATE_WRITE_FAILED] += 1
        else:
            self._counters[FaultKind.LATE_WRITE_LANDED] += 1

    def _forget_late_write(self, task: asyncio.Task[None]) -> None:
        del self._late[task]
        error = None if task.cancelled() else task.exception()
        if error is not None:
            # A bug (the inner store raised something untyped): re-raised by settle().
            self._late_errors.append(error)

    async def settle(self) -> None:
        """Wait until every late write has landed, been refused or been dropped.

        Re-raises the first unexpected (non-storage) error a late write ran into.
        """
        while self._late:
            await asyncio.wait(builtins.list(self._late))
        if self._late_errors:
            error, self._late_errors = self._late_errors[0], []
            raise error

    async def aclose(self) -> None:
        """Drop late writes still waiting out their delay, wait for those being sent,
        then close the inner store."""
        try:
            for late in self._late.values():
                late.delay_scope.cancel()
            await self.settle()
        finally:
            await self._inner.aclose()

    # -- decisions ---------------------------------------------------------------------

    def _applies(self, key: str) -> bool:
        return self._faults.keys is None or self._faults.keys(key)

    def _draw(self, probability: float) -> bool:
        # Nothing is drawn for a fault that is off, so turning one on changes only the
        # decisions of calls where it could happen.
        return probability > 0 and self._random.random() < probability

    def _draw_delay(self) -> float:
        faults = self._faults
        if faults.latency_jitter == 0:
            return faults.latency
        return faults.latency + self._random.random() * faults.latency_jitter

    def _draw_late_delay(self) -> float:
        faults = self._faults
        if faults.late_write_jitter == 0:
            return faults.late_write_delay
        return faults.late_write_delay + self._random.random() * faults.late_write_jitter

    def _draw_write_fault(self) -> _WriteFault | None:
        faults = self._faults
        choices = (
            (_WriteFault.NOT_APPLIED, faults.write_not_applied),
            (_WriteFault.LOST, faults.write_lost),
            (_WriteFault.ACK_LOST, faults.write_ack_lost),
            (_WriteFault.LATE, faults.late_write),
        )
        if not any(probability for _, probability in choices):
            return None
        roll = self._random.random()
        for fault, probability in choices:
            if roll < probability:
                return fault
            roll -= probability
        return None

    async def _delay(self, seconds: float) -> None:
        if seconds > 0:
            self._counters[FaultKind.DELAYED] += 1
            await self._sleep(seconds)
