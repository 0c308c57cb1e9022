"""A synchronous, in-memory world for driving the core in tests: no event loop, no I/O.

``SimStore`` is a compare-and-swap object store with integer versions that performs the
core's five storage primitives. ``Harness`` delivers a broker's effects to it, by
default at once and successfully, or holds them so a test can deliver each with the
outcome it wants (a conflict, an ambiguous failure, a write that lands late...).
"""

from __future__ import annotations

from typing import Literal

import attrs
import orjson

from osqueue_core import (
    Broker,
    BrokerConfig,
    Claim,
    Command,
    Complete,
    DeleteObject,
    Effect,
    Fail,
    Heartbeat,
    KeysListed,
    ListKeys,
    ObjectDeleted,
    ObjectRead,
    ObjectWritten,
    Push,
    ReadObject,
    ReadVersion,
    Release,
    Reply,
    StorageFailed,
    StorageResult,
    VersionRead,
    WriteConflicted,
    WriteObject,
)

#: ``conflict``: another writer rewrote the object just before (same bytes, new
#: version), so the write is refused. ``unknown_landed``: the write landed but the
#: runtime reports an unknown outcome; ``unknown_lost``: it did not land, same report.
#: ``late``: reported unknown now, lands (or conflicts) when ``land_late`` is called.
#: A delete meets the same outcomes, except ``conflict`` (it has no precondition): the
#: store refused it, as ``failed``.
Outcome = Literal["ok", "conflict", "unknown_landed", "unknown_lost", "failed", "late"]


@attrs.define
class SimStore:
    """Objects by key, each with an integer version that changes on every write."""

    objects: dict[str, tuple[bytes, int]] = attrs.Factory(dict)
    counter: int = 0
    #: Writes (and deletes) reported as unknown that have not reached the store yet.
    late: list[WriteObject | DeleteObject] = attrs.Factory(list)

    def get(self, key: str) -> bytes | None:
        found = self.objects.get(key)
        return found[0] if found else None

    def keys(self, prefix: str = "") -> list[str]:
        return sorted(k for k in self.objects if k.startswith(prefix))

    def put(self, key: str, data: bytes) -> int:
        """Write unconditionally (a test playing another writer)."""
        self.counter += 1
        self.objects[key] = (data, self.counter)
        return self.counter

    def write(self, effect: WriteObject) -> StorageResult:
        """Perform a conditional write exactly as a real store would."""
        current = self.objects.get(effect.key)
        expected = effect.expected_version
        matches = current is None if expected is None else (current or (b"", -1))[1] == expected
        if not matches:
            return WriteConflicted(effect.op_id)
        return ObjectWritten(effect.op_id, self.put(effect.key, effect.data))

    def delete(self, effect: DeleteObject) -> StorageResult:
        """Delete the object (absent counts as deleted), exactly as a real store would."""
        self.objects.pop(effect.key, None)
        return ObjectDeleted(effect.op_id)

    def land_late(self, index: int = 0) -> StorageResult:
        """A write (or delete) reported unknown earlier reaches the store now."""
        effect = self.late.pop(index)
        if isinstance(effect, DeleteObject):
            return self.delete(effect)
        return self.write(effect)

    def execute(self, effect: Effect, outcome: Outcome = "ok") -> StorageResult:
        """Run one storage effect with the given outcome and return what a runtime reports."""
        assert not isinstance(effect, Reply)
        op_id = effect.op_id
        if outcome == "failed" or (outcome == "conflict" and isinstance(effect, DeleteObject)):
            return StorageFailed(op_id, outcome_unknown=False, message="injected")
        if outcome == "unknown_lost":
            return StorageFailed(op_id, outcome_unknown=True, message="injected")
        match effect:
            case ReadObject(_, key):
                found = self.objects.get(key)
                return ObjectRead(op_id, *(found if found else (None, None)))
            case ReadVersion(_, key):
                found = self.objects.get(key)
                return VersionRead(op_id, found[1] if found else None)
            case ListKeys(_, prefix, limit, start_after):
                keys = [k for k in self.keys(prefix) if start_after is None or k > start_after]
                return KeysListed(op_id, tuple(keys[:limit]))
            case DeleteObject():
                if outcome == "late":
                    self.late.append(effect)
                    return StorageFailed(op_id, outcome_unknown=True, message="timed out")
                result = self.delete(effect)
                if outcome == "unknown_landed":
                    return StorageFailed(op_id, outcome_unknown=True, message="injected")
                return result
            case WriteObject(_, key):
                if outcome == "late":
                    self.late.append(effect)
                    return StorageFailed(op_id, outcome_unknown=True, message="timed out")
                if outcome == "conflict":
                    if key in self.objects:
                        self.put(key, self.objects[key][0])  # a rogue rewrite
                    return WriteConflicted(op_id)
                result = self.write(effect)
                if outcome == "unknown_landed" and isinstance(result, ObjectWritten):
                    return StorageFailed(op_id, outcome_unknown=True, message="injected")
                return result
        raise AssertionError(f"not a storage effect: {effect!r}")


@attrs.define
class Harness:
    """One broker wired to a SimStore, with replies collected by request id."""

    broker: Broker
    store: SimStore
    now: float = 1000.0
    #: The wall clock given with every input (None: the broker uses ``now``).
    wall: float | None = None
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
        wall: float | None = None,
    ) -> Harness:
        store = store if store is not None else SimStore()
        broker = Broker(config, identity=identity, incarnation=incarnation or identity + "-1")
        harness = cls(broker, store, now=now, wall=wall)
        broker.start(now, wall)
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
        if isinstance(effect, WriteObject) and effect.key == self.broker.config.state_key:
            self.writes += 1
        elif isinstance(effect, ReadObject | ReadVersion) and effect.key == "state.json":
            self.reads += 1
        result = self.store.execute(effect, outcome)
        self.broker.receive(result, self.now, self.wall)
        self._collect()
        return result

    def submit(self, command: Command) -> Reply | None:
        self.broker.submit(command, self.now, self.wall)
        self.flush()
        return self.replies.get(command.request_id)

    def advance(self, seconds: float) -> None:
        self.now += seconds
        if self.wall is not None:
            self.wall += seconds
        self.broker.tick(self.now, self.wall)
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

    def release(self, job_id: str, worker: str = "w1") -> Reply | None:
        return self.submit(Release(self.request_id(), job_id, worker))

    def pending_of(self, kind: type, prefix: str | None = None) -> list[int]:
        """Indexes of pending effects of ``kind`` (on keys under ``prefix``)."""
        return [
            i
            for i, e in enumerate(self.pending)
            if isinstance(e, kind)
            and (prefix is None or getattr(e, "key", getattr(e, "prefix", "")).startswith(prefix))
        ]

    def deliver_all(self) -> None:
        while self.pending:
            self.deliver(0)


def archived_ids(store: SimStore, prefix: str = "archive/") -> list[str]:
    """Every job id in every archive object, with repeats (there must be none)."""
    ids: list[str] = []
    for key in store.keys(prefix):
        data = store.get(key)
        assert data is not None
        ids.extend(job["id"] for job in orjson.loads(data)["jobs"])
    return ids
