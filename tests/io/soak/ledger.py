"""What the soak's clients sent and what the broker acknowledged: the evidence the
checks compare the storage against.

Every push *attempt* carries payloads of its own (``soak:p1:s42:i0:a2`` is publisher 1,
single push 42, item 0, attempt 2), so a job found in storage names the exact call that
created it. A retry is a new attempt of the same *logical push*: the same payloads but
for the attempt number. Timestamps are ``time.monotonic()`` in the driver process, the
one clock every client shares.
"""

from __future__ import annotations

import re
import traceback
from collections import Counter, defaultdict

import attrs
import orjson

from osqueue_core import OsqueueError

_PAYLOAD = re.compile(rb"^soak:p(\d+):([sb])(\d+):i(\d+):a(\d+):x*$")


@attrs.frozen
class PayloadName:
    """What a payload says about the call that sent it."""

    publisher: int
    kind: str  # "s": Push, "b": PushBatch
    seq: int
    item: int
    attempt: int

    @property
    def logical(self) -> tuple[int, str, int, int]:
        """The logical push this payload is one attempt of (attempt number left out)."""
        return (self.publisher, self.kind, self.seq, self.item)

    @property
    def call(self) -> tuple[int, str, int, int]:
        """The push call (attempt) that sent it; a batch's items share one."""
        return (self.publisher, self.kind, self.seq, self.attempt)


def make_payload(name: PayloadName, padding: int) -> bytes:
    head = f"soak:p{name.publisher}:{name.kind}{name.seq}:i{name.item}:a{name.attempt}:"
    return head.encode() + b"x" * padding


def parse_payload(payload: bytes) -> PayloadName | None:
    """The name in a soak payload, or None for anything the soak never sends."""
    match = _PAYLOAD.match(payload)
    if match is None:
        return None
    publisher, kind, seq, item, attempt = match.groups()
    return PayloadName(int(publisher), kind.decode(), int(seq), int(item), int(attempt))


@attrs.define
class PushCall:
    """One Push or PushBatch attempt."""

    payloads: tuple[bytes, ...]
    sent_at: float
    #: The job ids the broker answered with, in payload order; None: no answer.
    acked_ids: tuple[str, ...] | None = None
    #: Why it got no answer (the error's class name and message).
    error: str | None = None


@attrs.define
class Grant:
    """One acknowledged claim: ``worker`` holds ``job_id`` from (at latest) ``sent_at``."""

    worker: str
    job_id: str
    payload: bytes
    attempts: int
    lease_timeout: float
    sent_at: float
    received_at: float
    #: A lower bound of when the broker's lease ends: claim (or acknowledged
    #: heartbeat) *send* time plus the lease it reported.
    held_until: float
    #: Send time of the first Fail: from then on the broker may have released the job.
    released_at: float | None = None
    #: completed, failed, abandoned, lease-lost, not-found, gave-up
    outcome: str = "held"

    def heartbeat_acked(self, sent_at: float, lease_timeout: float) -> None:
        self.held_until = max(self.held_until, sent_at + lease_timeout)

    @property
    def hold_end(self) -> float:
        """Until when no other worker may be given this job (a lower bound)."""
        if self.released_at is None:
            return self.held_until
        return min(self.held_until, self.released_at)


@attrs.define
class Ledger:
    """Everything the soak's clients did; shared by every client task (one event loop)."""

    calls: dict[tuple[int, str, int, int], PushCall] = attrs.Factory(dict)
    grants: list[Grant] = attrs.Factory(list)
    #: job id -> (worker, when) for every acknowledged Complete of it.
    completions: defaultdict[str, list[tuple[str, float]]] = attrs.Factory(
        lambda: defaultdict(list)
    )
    #: job id -> workers whose Fail (requeue) was acknowledged.
    fails: defaultdict[str, list[str]] = attrs.Factory(lambda: defaultdict(list))
    heartbeats_acked: int = 0
    #: Jobs the broker acknowledged as pushed (a batch counts each of its payloads).
    pushes_acked: int = 0
    completions_acked: int = 0
    #: (operation, error class) -> how many calls failed that way.
    errors: Counter[tuple[str, str]] = attrs.Factory(Counter)
    #: Errors no soak client should ever see: "operation: error" with the message.
    unexpected: list[str] = attrs.Factory(list)

    def push_sent(self, name: PayloadName, payloads: tuple[bytes, ...], now: float) -> PushCall:
        call = PushCall(payloads, now)
        self.calls[name.call] = call
        return call

    def error(self, operation: str, error: BaseException, *, expected: bool) -> None:
        kind = type(error).__name__
        self.errors[(operation, kind)] += 1
        if not expected:
            where = ""
            if not isinstance(error, OsqueueError) and error.__traceback__ is not None:
                frame = traceback.extract_tb(error.__traceback__)[-1]
                where = f" (raised at {frame.filename}:{frame.lineno} in {frame.name})"
            self.unexpected.append(f"{operation}: {kind}: {error}{where}")

    def push_acked(self, call: PushCall, job_ids: tuple[str, ...]) -> None:
        call.acked_ids = job_ids
        self.pushes_acked += len(job_ids)

    def complete_acked(self, job_id: str, worker: str, now: float) -> None:
        self.completions[job_id].append((worker, now))
        self.completions_acked += 1

    def to_json(self) -> bytes:
        """The whole ledger, for the run directory's evidence."""
        calls = {
            ":".join(map(str, key)): {
                "payloads": [payload.decode() for payload in call.payloads],
                "acked_ids": call.acked_ids,
                "error": call.error,
            }
            for key, call in self.calls.items()
        }
        ledger = {
            "calls": calls,
            "grants": [attrs.asdict(g, value_serializer=_bytes_as_text) for g in self.grants],
            "completions": self.completions,
            "fails": self.fails,
            "unexpected": self.unexpected,
        }
        return orjson.dumps(ledger, option=orjson.OPT_INDENT_2)


def _bytes_as_text(_: object, __: object, value: object) -> object:
    return value.decode(errors="replace") if isinstance(value, bytes) else value
