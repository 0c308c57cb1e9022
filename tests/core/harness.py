"""A synchronous, in-memory world for driving the core in tests: no event loop, no I/O.

``SimStore`` is a compare-and-swap object store with integer versions. ``Harness``
delivers a broker's effects to it, by default at once and successfully, or holds them
so a test can deliver each with the outcome it wants (conflict, ambiguous failure...).
"""

from __future__ import annotations

from typing import Literal

import attrs

from osqueue_core import (
    ArchiveWritten,
    Broker,
    BrokerConfig,
    Claim,
    Command,
    Complete,
    Effect,
    Fail,
    Heartbeat,
    Push,
    ReadState,
    Reply,
    StateRead,
    StateWritten,
    StorageFailed,
    StorageResult,
    WriteArchive,
    WriteConflicted,
    WriteState,
)

Outcome = Literal["ok", "conflict", "unknown_landed", "unknown_lost", "failed"]


@attrs.define
class SimStore:
    """Objects by key, each with an integer version that changes on every write."""

    objects: dict[str, tuple[bytes, int]] = attrs.Factory(dict)
    counter: int = 0

    def get(self, key: str) -> bytes | None:
        found = self.objects.get(key)
        return found[0] if found else None

    def keys(self, prefix: str = "") -> list[str]:
        return sorted(k for k in self.objects if k.startswith(prefix))

    def _put(self, key: str, data: bytes) -> int:
        self.counter += 1
        self.objects[key] = (data, self.counter)
        return self.counter

    def execute(self, effect: Effect, outcome: Outcome = "ok") -> StorageResult:
        """Run one storage effect with the given outcome and return what a runtime reports."""
        if outcome == "failed":
            return StorageFailed(effect.op_id, outcome_unknown=False, message="injected")  # type: ignore[union-attr]
        if outcome == "unknown_lost":
            return StorageFailed(effect.op_id, outcome_unknown=True, message="injected")  # type: ignore[union-attr]
        match effect:
            case ReadState(op_id, key):
                found = self.objects.get(key)
                if found is None:
                    return StateRead(op_id, None, None)
                return StateRead(op_id, found[0], found[1])
            case WriteState(op_id, key, data, expected, _):
                current = self.objects.get(key)
                matches = (
                    current is None
                    if expected is None
                    else (current is not None and current[1] == expected)
                )
                if outcome == "conflict" or not matches:
                    return WriteConflicted(op_id)
                version = self._put(key, data)
                if outcome == "unknown_landed":
                    return StorageFailed(op_id, outcome_unknown=True, message="injected")
                return StateWritten(op_id, version)
            case WriteArchive(op_id, key, data):
                if key in self.objects:
                    return ArchiveWritten(op_id, already_existed=True)
                self._put(key, data)
                if outcome == "unknown_landed":
                    return StorageFailed(op_id, outcome_unknown=True, message="injected")
                return ArchiveWritten(op_id)
        raise AssertionError(f"not a storage effect: {effect!r}")


@attrs.define
class Harness:
    """One broker wired to a SimStore, with replies collected by request id."""

    broker: Broker
    store: SimStore
    now: float = 1000.0
    auto: bool = True
    replies: dict[object, Reply] = attrs.Factory(dict)
    pending: list[Effect] = attrs.Factory(list)
    writes: int = 0
    reads: int = 0
    _next_request: int = 0

    @classmethod
    def started(
        cls,
        store: SimStore | None = None,
        config: BrokerConfig | None = None,
        *,
        identity: str = "broker-a",
        incarnation: str | None = None,
        now: float = 1000.0,
    ) -> Harness:
        store = store if store is not None else SimStore()
        broker = Broker(config, identity=identity, incarnation=incarnation or identity + "-1")
        harness = cls(broker, store, now=now)
        broker.start(now)
        harness.flush()
        return harness

    def request_id(self) -> int:
        self._next_request += 1
        return self._next_request

    def flush(self) -> None:
        """Collect the broker's effects; with ``auto``, run storage effects until idle."""
        self._collect()
        while self.auto and self.pending:
            self.deliver(0)

    def _collect(self) -> None:
        for effect in self.broker.take_effects():
            if isinstance(effect, Reply):
                assert effect.request_id not in self.replies, "two replies to one request"
                self.replies[effect.request_id] = effect
            else:
                self.pending.append(effect)

    def deliver(self, index: int = 0, outcome: Outcome = "ok") -> StorageResult:
        effect = self.pending.pop(index)
        if isinstance(effect, WriteState):
            self.writes += 1
        elif isinstance(effect, ReadState):
            self.reads += 1
        result = self.store.execute(effect, outcome)
        self.broker.receive(result, self.now)
        self._collect()
        return result

    def submit(self, command: Command) -> Reply | None:
        self.broker.submit(command, self.now)
        self.flush()
        return self.replies.get(command.request_id)

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.broker.tick(self.now)
        self.flush()

    def push(self, payload: bytes = b"job") -> Reply | None:
        return self.submit(Push(self.request_id(), payload))

    def claim(self, worker: str = "w1", wait: float = 0.0) -> Reply | None:
        return self.submit(Claim(self.request_id(), worker, wait))

    def heartbeat(self, job_id: str, worker: str = "w1") -> Reply | None:
        return self.submit(Heartbeat(self.request_id(), job_id, worker))

    def complete(self, job_id: str, worker: str = "w1") -> Reply | None:
        return self.submit(Complete(self.request_id(), job_id, worker))

    def fail(self, job_id: str, worker: str = "w1", *, requeue: bool = True) -> Reply | None:
        return self.submit(Fail(self.request_id(), job_id, worker, "boom", requeue))

    def pending_of(self, kind: type[Effect]) -> list[int]:
        return [i for i, e in enumerate(self.pending) if isinstance(e, kind)]


def archived_ids(store: SimStore, prefix: str = "archive/") -> list[str]:
    """Every job id in every archive object, with repeats (there must be none)."""
    import orjson

    ids: list[str] = []
    for key in store.keys(prefix):
        data = store.get(key)
        assert data is not None
        ids.extend(job["id"] for job in orjson.loads(data)["jobs"])
    return ids
