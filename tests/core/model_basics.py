"""What the model test (tests/core/test_model.py) knows about time, about what each push
asked for and about what storage holds, written from docs/lifecycle.md, not with
``osqueue_core``'s rules.

* :class:`Timeline`: the wall clock the model gave the brokers, step by step. A command
  applied "somewhere between two steps" saw a wall clock between the lowest and the
  highest wall of those steps: that is all the model may assume.
* :class:`Spec`: what one pushed item asked for (queue, priority, delay or run-at, key,
  attempt limit); its payload is unique, so every stored job is traced to its push.
* :func:`backoff`: the documented retry formula, computed here, not with
  ``RetryPolicy.delay``.
* :class:`RecordingStore`: every version of the state object that landed, in order
  (tests/core/model_history.py audits them), and every segment ever created, deleted or
  not; it fails at once when a segment is deleted while a stored state still references
  it, or a state referencing a deleted one lands; :class:`ArchiveReader`: the archived
  jobs.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from typing import Literal

import attrs
import orjson

from osqueue_core import (
    SCHEMA_VERSION,
    BrokerConfig,
    DeleteObject,
    Effect,
    Job,
    JobStatus,
    ObjectRead,
    ObjectWritten,
    ReadObject,
    RetryPolicy,
    StorageResult,
    WriteConflicted,
    WriteObject,
    decode_state,
)

from .harness import Outcome, SimStore

#: How far two computations of the same wall time may differ.
EPSILON = 1e-6


@attrs.define
class Timeline:
    """The wall clock at every step of the model (a step: an input given to a broker,
    or the wall clock stepping)."""

    walls: list[float]

    @property
    def step(self) -> int:
        return len(self.walls) - 1

    def tick(self, wall: float) -> int:
        self.walls.append(wall)
        return self.step

    def highest(self, since: int, until: int | None = None) -> float:
        """The latest wall clock any broker saw from step ``since`` to ``until``."""
        return max(self.walls[since : None if until is None else until + 1])

    def lowest(self, since: int, until: int | None = None) -> float:
        return min(self.walls[since : None if until is None else until + 1])


@attrs.frozen
class Spec:
    """What one pushed item asked for, and when (the step its request was sent)."""

    rid: int
    submitted: int
    queue: str = "default"
    priority: int = 0
    delay: float | None = None
    run_at: float | None = None
    key: str | None = None
    max_attempts: int | None = None

    @property
    def identity(self) -> tuple[str, str] | None:
        """What idempotency matches on: (queue, key), if keyed."""
        return None if self.key is None else (self.queue, self.key)

    def limit(self, config: BrokerConfig) -> int | None:
        """The attempts its job gets: its own limit, else its queue's policy's."""
        if self.max_attempts is not None:
            return self.max_attempts
        return policy_of(config, self.queue).max_attempts

    def run_at_bounds(self, timeline: Timeline, until: int | None = None) -> tuple[float, float]:
        """Bounds on the run-at its job was born with (-inf, -inf: none), for a push
        applied between its submission and step ``until``."""
        if self.delay is not None:
            if self.delay == 0:
                return -math.inf, -math.inf
            return (
                timeline.lowest(self.submitted, until) + self.delay,
                timeline.highest(self.submitted, until) + self.delay,
            )
        if self.run_at is not None:
            return self.run_at, self.run_at
        return -math.inf, -math.inf


def policy_of(config: BrokerConfig, queue: str) -> RetryPolicy:
    return config.queue_retry.get(queue, config.retry)


def backoff(config: BrokerConfig, queue: str, job_id: str, attempts: int) -> float:
    """docs/lifecycle.md: ``min(cap, base * 2 ** (n - 1)) * (0.5 + 0.5 * h(job_id, n))``."""
    policy = policy_of(config, queue)
    if policy.base == 0:
        return 0.0
    digest = hashlib.blake2b(f"{attempts}:{job_id}".encode(), digest_size=8).digest()
    jitter = int.from_bytes(digest, "big") / 2**64
    return min(policy.cap, policy.base * 2.0 ** (attempts - 1)) * (0.5 + 0.5 * jitter)


def seq_of(job_id: str) -> int:
    """The FIFO place in a default job id (``<seq>-<epoch>``)."""
    return int(job_id.split("-")[0])


# What a stored job's fields mean (docs/lifecycle.md), computed here rather than with the
# core's properties: a mutant that breaks those must not fool the model.


def ready_at(job: Job) -> float | None:
    """When a ready job becomes claimable: its retry's run-at after a failure, else the
    run-at it was born with (None: at once)."""
    return job.retry_at if job.retry_at is not None else job.born.run_at


def leaving(job: Job) -> bool:
    """Finished, with the archive object it is on its way to."""
    return job.archive_key is not None


def dead_letter(job: Job) -> bool:
    """Dead and kept in the state: listable, redrivable, purgeable."""
    return job.status is JobStatus.DEAD and not leaving(job)


def limit_of(config: BrokerConfig, job: Job) -> int | None:
    if job.born.max_attempts is not None:
        return job.born.max_attempts
    return policy_of(config, job.born.queue).max_attempts


#: Outcomes of a delivery: a storage outcome, or a lie about a segment read (the object
#: is there, the read says ``absent``, or returns it ``damaged``: one byte changed).
Delivery = Outcome | Literal["absent", "damaged"]

#: What a foreign writer plants under a segment key the broker is creating.
FOREIGN_SEGMENT = b'{"planted":"by somebody else"}'


@attrs.define
class RecordingStore(SimStore):
    """A SimStore that keeps every version of the state object, with the step at which
    it landed (``moment`` tells the model's current step), and every segment object a
    broker ever created, deleted or not (the history audit still reads them).

    Segment keys are create-only and hold one content ever: a write under
    ``segment_prefix`` that is not a create, or a create of other bytes under a key
    created before (and deleted since), fails the test at once. A ``conflict`` on a segment create
    plants a foreign object under the key (the broker must read it back and abandon
    the key); reads of segments can lie (:data:`Delivery`).

    A segment may be deleted only once no state can reference it again: a delete that
    lands while the stored state references its key, or a state referencing a deleted
    key that lands later, fails the test at once (a delete that lands late is checked
    when it lands)."""

    moment: Callable[[], int] = lambda: 0
    states: list[tuple[int, bytes]] = attrs.Factory(list)
    state_key: str = "state.json"
    segment_prefix: str = "segments/"
    #: Segment key -> (the step it landed, its bytes), for every create that landed.
    created: dict[str, tuple[int, bytes]] = attrs.Factory(dict)
    #: Segment key -> the step a broker first learnt it is durable (written, or read
    #: back with its bytes).
    known: dict[str, int] = attrs.Factory(dict)
    #: Segment keys under which a foreign object was planted and still is (deleted or
    #: replaced by a broker's own create since: the key is off this set).
    foreign: set[str] = attrs.Factory(set)
    #: Segment key -> the step a delete of it last landed.
    deleted: dict[str, int] = attrs.Factory(dict)

    def put(self, key: str, data: bytes) -> int:
        if key == self.state_key and self.deleted:
            gone = sorted(referenced(data) & self.deleted.keys())
            assert not gone, f"a state referencing deleted segments {gone} landed"
        version = super().put(key, data)
        if key == self.state_key and (not self.states or self.states[-1][1] != data):
            self.states.append((self.moment(), data))
        return version

    def delete(self, effect: DeleteObject) -> StorageResult:
        if self.is_segment(effect.key):
            current = self.get(self.state_key)
            assert current is None or effect.key not in referenced(current), (
                f"{effect.key} deleted while the stored state references it"
            )
            self.deleted[effect.key] = self.moment()
            self.foreign.discard(effect.key)
        return super().delete(effect)

    def is_segment(self, key: str) -> bool:
        return key.startswith(self.segment_prefix)

    def write(self, effect: WriteObject) -> StorageResult:
        if self.is_segment(effect.key):
            assert effect.expected_version is None, f"{effect.key}: a segment rewritten"
        result = super().write(effect)
        if self.is_segment(effect.key) and isinstance(result, ObjectWritten):
            first = self.created.setdefault(effect.key, (self.moment(), effect.data))
            # A create lands again only after a delete (it is create-only): a late copy
            # of the very same create (harmless: nothing references the key again, the
            # next sweep finds it), never other bytes under the same key.
            assert first[1] == effect.data, f"{effect.key} written twice, with other bytes"
            # The broker's own object now: a fenced broker whose create conflicted, and
            # found the key empty when it read back (a successor's sweep deleted the
            # foreign object), creates again and may delete what it created.
            self.foreign.discard(effect.key)
        return result

    def execute(self, effect: Effect, outcome: Delivery = "ok") -> StorageResult:
        key = getattr(effect, "key", "")
        if not self.is_segment(key):
            assert outcome not in ("absent", "damaged"), outcome
            return super().execute(effect, outcome)
        if isinstance(effect, WriteObject) and outcome == "conflict":
            if key not in self.objects:
                self.foreign.add(key)
                super().put(key, FOREIGN_SEGMENT)
            return WriteConflicted(effect.op_id)
        if isinstance(effect, ReadObject) and outcome in ("absent", "damaged"):
            found = self.objects.get(key)
            if outcome == "absent" or found is None:
                return ObjectRead(effect.op_id, None, None)
            data, version = found
            return ObjectRead(effect.op_id, bytes([data[0] ^ 1]) + data[1:], version)
        assert outcome not in ("absent", "damaged"), outcome
        result = super().execute(effect, outcome)
        ours = self.created.get(key)
        if isinstance(result, ObjectWritten) or (
            isinstance(result, ObjectRead) and ours is not None and result.data == ours[1]
        ):
            self.known.setdefault(key, self.moment())
        return result


def referenced(state: bytes) -> set[str]:
    """The segment keys a stored state's references name."""
    return {ref["key"] for ref in orjson.loads(state).get("segments", ())}


@attrs.define
class ArchiveReader:
    """The jobs of every archive object, decoded once per object."""

    _cache: dict[str, tuple[bytes, list[Job]]] = attrs.Factory(dict)

    def jobs(self, store: SimStore, prefix: str = "archive/") -> list[Job]:
        found: list[Job] = []
        for key in store.keys(prefix):
            data = store.get(key)
            assert data is not None
            cached = self._cache.get(key)
            if cached is None or cached[0] != data:
                cached = (data, decode_archive(data))
                self._cache[key] = cached
            found.extend(cached[1])
        return found


def decode_archive(data: bytes) -> list[Job]:
    """An archive object's jobs, parsed and validated like a state object's."""
    raw = orjson.loads(data)
    jobs = raw["jobs"]
    wrapped = {
        "schema_version": SCHEMA_VERSION,
        "revision": 1,
        "owner": {"identity": "archive", "incarnation": "archive", "epoch": 1},
        "next_seq": max((job["seq"] for job in jobs), default=0) + 1,
        "jobs": jobs,
    }
    return decode_state(orjson.dumps(wrapped)).jobs
