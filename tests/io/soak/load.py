"""The soak's clients: publishers and consumers as asyncio tasks on real ``Worker``
connections, retrying through every broker outage and writing down every answer.

A failed call whose error is ``retryable`` (the broker is down, restarting, stopping) is
retried after a short random pause; a retried push is a new *attempt* with payloads of
its own (see :mod:`tests.io.soak.ledger`). Errors no soak client should see are kept in
``Ledger.unexpected``; the checks fail on them.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio
import attrs

from osqueue_core import JobNotFound, LeaseLost, OsqueueError
from osqueue_io.worker import RemoteJob, Worker
from tests.io.soak.ledger import Grant, Ledger, PayloadName, make_payload

T = TypeVar("T")

#: Retryable errors a soak client meets in the normal course of a crash and restart.
#: Others that are retryable (BrokerReplaced: a SIGKILLed broker cannot have been
#: replaced while alive; StorageUnavailable: the store itself never goes away here) are
#: retried too, but reported.
ROUTINE_RETRYABLE = frozenset({"BrokerNotRunning", "BrokerStopping", "Overloaded"})


@attrs.frozen
class LoadConfig:
    """How the publishers and consumers behave."""

    address: str
    publishers: int = 2
    consumers: int = 3
    #: Share of pushes sent as a PushBatch (of 2 to ``max_batch`` payloads).
    batch_fraction: float = 0.3
    max_batch: int = 8
    #: Mean pause between a publisher's pushes, seconds.
    push_pause: float = 0.02
    #: Publishers pause while the broker reports this many ready jobs, so the state
    #: stays small however long the soak runs.
    max_backlog: int = 100
    #: Payload filler: 0 to this many bytes.
    max_padding: int = 200
    claim_wait: float = 1.0
    #: Shares of claimed jobs that are heartbeaten, failed with requeue, and abandoned
    #: (left to their lease expiry).
    heartbeat_fraction: float = 0.3
    fail_fraction: float = 0.1
    abandon_fraction: float = 0.03
    #: Every call's deadline, seconds.
    call_timeout: float = 3.0
    #: An operation still failing after this long is given up and reported.
    give_up_after: float = 60.0


class GaveUp(Exception):
    """An operation kept failing with retryable errors for ``give_up_after`` seconds."""


class Clients:
    """Runs the load (:meth:`run_load`) and the final drain (:meth:`drain`)."""

    def __init__(self, config: LoadConfig, ledger: Ledger, seed: int) -> None:
        self.config = config
        self.ledger = ledger
        self.seed = seed
        self._stopping = False
        #: Ready jobs, as the broker last reported them.
        self._ready = 0

    def stop(self) -> None:
        """Ask every client to finish what it has in hand (an unanswered push is
        retried until answered, a held job is completed or failed) and return."""
        self._stopping = True

    # -- retries ---------------------------------------------------------------------

    async def _retrying(
        self, operation: str, attempt: Callable[[int], Awaitable[T]], rng: random.Random
    ) -> T:
        """``attempt(1)``, ``attempt(2)``, ... until one is answered; non-retryable
        errors are raised to the caller."""
        give_up_at = time.monotonic() + self.config.give_up_after
        number = 1
        while True:
            try:
                return await attempt(number)
            except OsqueueError as error:
                if not error.retryable:
                    raise
                kind = type(error).__name__
                self.ledger.error(operation, error, expected=kind in ROUTINE_RETRYABLE)
            except Exception as error:
                # The client broke its promise of typed errors: a finding. The call's
                # outcome is unknown, like a lost connection's; retry it like one.
                self.ledger.error(operation, error, expected=False)
            if time.monotonic() > give_up_at:
                message = f"{operation} failed for {self.config.give_up_after:.0f}s"
                self.ledger.unexpected.append(f"{operation}: gave up: {message}")
                raise GaveUp(message)
            number += 1
            await anyio.sleep(rng.uniform(0.02, 0.1))

    # -- publishing ------------------------------------------------------------------

    async def _publisher(self, index: int) -> None:
        rng = random.Random(f"{self.seed}:publisher:{index}")
        async with Worker(self.config.address, timeout=self.config.call_timeout) as worker:
            seq = 0
            while not self._stopping:
                if self._ready > self.config.max_backlog:
                    await anyio.sleep(0.05)
                    continue
                if rng.random() < self.config.batch_fraction:
                    size = rng.randint(2, self.config.max_batch)
                    kind = "b"
                else:
                    size, kind = 1, "s"
                paddings = [rng.randint(0, self.config.max_padding) for _ in range(size)]
                await self._push(worker, rng, index, kind, seq, paddings)
                seq += 1
                await anyio.sleep(rng.expovariate(1 / self.config.push_pause))

    async def _push(
        self,
        worker: Worker,
        rng: random.Random,
        publisher: int,
        kind: str,
        seq: int,
        paddings: list[int],
    ) -> None:
        async def attempt(number: int) -> tuple[str, ...]:
            names = [
                PayloadName(publisher, kind, seq, item, number) for item in range(len(paddings))
            ]
            payloads = tuple(make_payload(n, p) for n, p in zip(names, paddings, strict=True))
            call = self.ledger.push_sent(names[0], payloads, time.monotonic())
            try:
                if kind == "b":
                    ids = tuple(await worker.push_batch(payloads))
                else:
                    ids = (await worker.push(payloads[0]),)
            except Exception as error:
                call.error = f"{type(error).__name__}: {error}"
                raise
            self.ledger.push_acked(call, ids)
            return ids

        operation = "PushBatch" if kind == "b" else "Push"
        try:
            await self._retrying(operation, attempt, rng)
        except GaveUp:
            pass
        except OsqueueError as error:
            self.ledger.error(operation, error, expected=False)

    # -- consuming -------------------------------------------------------------------

    async def _consumer(self, name: str, draining: bool) -> None:
        rng = random.Random(f"{self.seed}:{name}")
        async with Worker(
            self.config.address, worker_id=name, timeout=self.config.call_timeout
        ) as worker:
            while not self._stopping:
                if draining and await self._drained(worker, rng):
                    return
                claimed = await self._claim(worker, rng)
                if claimed is not None:
                    await self._process(worker, rng, *claimed, draining=draining)

    async def _claim(self, worker: Worker, rng: random.Random) -> tuple[RemoteJob, Grant] | None:
        sent_at = 0.0

        async def attempt(_: int) -> RemoteJob | None:
            nonlocal sent_at
            sent_at = time.monotonic()
            return await worker.claim(wait=rng.uniform(0.1, self.config.claim_wait))

        try:
            job = await self._retrying("Claim", attempt, rng)
        except GaveUp:
            return None
        except OsqueueError as error:
            self.ledger.error("Claim", error, expected=False)
            return None
        if job is None:
            return None
        grant = Grant(
            worker=worker.worker_id,
            job_id=job.id,
            payload=job.data,
            attempts=job.attempts,
            lease_timeout=job.lease_timeout,
            sent_at=sent_at,
            received_at=time.monotonic(),
            held_until=sent_at + job.lease_timeout,
        )
        self.ledger.grants.append(grant)
        return job, grant

    async def _process(
        self, worker: Worker, rng: random.Random, job: RemoteJob, grant: Grant, *, draining: bool
    ) -> None:
        config = self.config
        if not draining and rng.random() < config.abandon_fraction:
            grant.outcome = "abandoned"  # its lease runs out; someone else gets it
            return
        try:
            if not draining and rng.random() < config.heartbeat_fraction:
                for _ in range(rng.randint(1, 2)):
                    await anyio.sleep(rng.uniform(0, min(0.2, job.lease_timeout / 4)))
                    await self._heartbeat(worker, rng, grant)
            await anyio.sleep(rng.uniform(0, 0.01))
            if not draining and rng.random() < config.fail_fraction:
                await self._fail(worker, rng, grant)
            else:
                await self._complete(worker, rng, grant)
        except LeaseLost:
            grant.outcome = "lease-lost"
        except JobNotFound:
            grant.outcome = "not-found"
        except GaveUp:
            grant.outcome = "gave-up"
        except OsqueueError as error:
            grant.outcome = f"error: {type(error).__name__}"
            self.ledger.error("Process", error, expected=False)

    async def _heartbeat(self, worker: Worker, rng: random.Random, grant: Grant) -> None:
        async def attempt(_: int) -> None:
            sent_at = time.monotonic()
            lease = await worker.heartbeat(grant.job_id)
            grant.heartbeat_acked(sent_at, lease)

        await self._job_call("Heartbeat", attempt, rng)
        self.ledger.heartbeats_acked += 1

    async def _complete(self, worker: Worker, rng: random.Random, grant: Grant) -> None:
        await self._job_call("Complete", lambda _: worker.complete(grant.job_id), rng)
        grant.outcome = "completed"
        self.ledger.complete_acked(grant.job_id, grant.worker, time.monotonic())

    async def _fail(self, worker: Worker, rng: random.Random, grant: Grant) -> None:
        async def attempt(_: int) -> bool:
            if grant.released_at is None:
                grant.released_at = time.monotonic()
            return await worker.fail(grant.job_id, "soak: requeue", requeue=True)

        if await self._job_call("Fail", attempt, rng):
            self.ledger.unexpected.append(f"Fail(requeue=True) of {grant.job_id}: dead-lettered")
        grant.outcome = "failed"
        self.ledger.fails[grant.job_id].append(grant.worker)

    async def _job_call(
        self, operation: str, attempt: Callable[[int], Awaitable[T]], rng: random.Random
    ) -> T:
        """A call about a held job: LeaseLost / JobNotFound end the job's processing
        (recorded, then raised to :meth:`_process`)."""
        try:
            return await self._retrying(operation, attempt, rng)
        except (LeaseLost, JobNotFound) as error:
            self.ledger.error(operation, error, expected=True)
            raise

    # -- the two phases --------------------------------------------------------------

    async def run_load(self) -> None:
        """Publish and consume until :meth:`stop`; returns when every client is done."""
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(self._watch_backlog)
            async with anyio.create_task_group() as clients:
                for index in range(self.config.publishers):
                    clients.start_soon(self._publisher, index)
                for index in range(self.config.consumers):
                    clients.start_soon(self._consumer, f"soak-consumer-{index}", False)
            tasks.cancel_scope.cancel()

    async def _watch_backlog(self) -> None:
        """Keep ``_ready`` current for the publishers' pause. (Counting acknowledged
        pushes against completions would not do: jobs whose claim answer was lost in a
        kill stay claimed while takeovers keep renewing their leases.)"""
        rng = random.Random(f"{self.seed}:backlog")
        async with Worker(self.config.address, timeout=self.config.call_timeout) as worker:
            while not self._stopping:
                try:
                    stats = await self._retrying("Stats", lambda _: worker.stats(), rng)
                except GaveUp:
                    stats = None
                except OsqueueError as error:
                    self.ledger.error("Stats", error, expected=False)
                    stats = None
                if stats is None:  # reported; publish without a pause from here on
                    self._ready = 0
                    return
                self._ready = stats.ready
                await anyio.sleep(0.2)

    async def drain(self) -> None:
        """Claim and complete until the broker reports an empty queue twice in a row
        (nothing ready, delayed, claimed or waiting for its archive write)."""
        self._stopping = False
        async with anyio.create_task_group() as tasks:
            for index in range(max(1, self.config.consumers)):
                tasks.start_soon(self._consumer, f"soak-drain-{index}", True)

    async def _drained(self, worker: Worker, rng: random.Random) -> bool:
        for confirmation in range(2):
            stats = await self._retrying("Stats", lambda _: worker.stats(), rng)
            # A failed job, or one whose lease ran out, waits out its retry backoff as
            # a delayed job: not ready, but not drained either.
            if stats.ready or stats.delayed or stats.claimed or stats.completed_pending_archive:
                if not stats.ready:
                    # Leases to run out, backoffs to pass or archive writes to land.
                    await anyio.sleep(0.1)
                return False
            if confirmation == 0:
                await anyio.sleep(0.2)
        return True
