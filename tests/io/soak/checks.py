"""The soak's verdict: what the storage holds after the drain, against the ledger of
what the clients were told.

What can be asserted exactly, given that a push without an answer is retried:

- an acknowledged push attempt created exactly the jobs it was answered with (the same
  ids, the same payloads), and each of them was completed and archived exactly once;
- an unanswered attempt created all of its jobs or none (a batch is one write), and at
  most one job per payload: a payload found twice was applied twice;
- every job anywhere carries a payload some attempt sent (nothing invented), so the
  extra jobs of a logical push come only from its unanswered attempts;
- a Complete is acknowledged at most once per job over all workers, and the archived
  record names the worker it was acknowledged to;
- no job is handed to a worker while another still holds it, judged on the driver's
  one clock with lower bounds of each lease (claim or heartbeat *send* time plus the
  lease the broker reported, cut short by a Fail's send time); a job whose Complete
  was acknowledged is never handed out again.
"""

from __future__ import annotations

import base64
import binascii
import itertools
from collections import Counter, defaultdict
from collections.abc import Iterable

import attrs
import orjson

from osqueue_core import SCHEMA_VERSION, OsqueueError, decode_state, untouched_positions
from tests.io.soak.ledger import Grant, Ledger, parse_payload

EVIDENCE_LINES = 12


@attrs.frozen
class FoundJob:
    """A job record read from storage."""

    id: str
    seq: int
    payload: bytes
    status: str
    attempts: int
    claimed_by: str | None
    #: ``state`` or the archive object's key.
    where: str


@attrs.define
class Check:
    name: str
    evidence: list[str] = attrs.Factory(list)

    @property
    def passed(self) -> bool:
        return not self.evidence

    def fail(self, line: str) -> None:
        self.evidence.append(line)

    def render(self) -> list[str]:
        if self.passed:
            return [f"  PASS  {self.name}"]
        lines = [f"  FAIL  {self.name} ({len(self.evidence)})"]
        lines += [f"          {line}" for line in self.evidence[:EVIDENCE_LINES]]
        if len(self.evidence) > EVIDENCE_LINES:
            lines.append(f"          ... and {len(self.evidence) - EVIDENCE_LINES} more")
        return lines


@attrs.define
class Verdict:
    checks: list[Check] = attrs.Factory(list)
    figures: dict[str, object] = attrs.Factory(dict)

    def check(self, name: str) -> Check:
        check = Check(name)
        self.checks.append(check)
        return check

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)


def state_jobs(data: bytes | None, check: Check) -> tuple[list[FoundJob], dict[str, int]]:
    """The inline jobs of the final state object, and how many jobs each referenced
    segment still holds untouched (failing ``check`` if the state is absent or does not
    parse, or if the broker did not release it)."""
    if data is None:
        check.fail("no state object")
        return [], {}
    try:
        state = decode_state(data)
    except OsqueueError as error:
        check.fail(f"{type(error).__name__}: {error}; first bytes: {data[:300]!r}")
        return [], {}
    if not state.header.owner.released:
        check.fail(f"the state is not marked released (owner {state.header.owner})")
    inline = [
        FoundJob(
            job.id, job.seq, job.payload, job.status.value, job.attempts, job.claimed_by, "state"
        )
        for job in state.jobs
    ]
    untouched = {ref.key: len(untouched_positions(ref)) for ref in state.segments}
    return inline, {key: count for key, count in untouched.items() if count}


def archive_jobs(objects: dict[str, bytes | None], check: Check) -> list[FoundJob]:
    """Every job record of every archive object, repeats included."""
    found: list[FoundJob] = []
    for key, data in objects.items():
        if data is None:
            check.fail(f"{key}: listed but not readable")
            continue
        try:
            found += _archive_object(key, data)
        except (ValueError, TypeError, KeyError, binascii.Error) as error:
            check.fail(f"{key}: {type(error).__name__}: {error}; first bytes: {data[:300]!r}")
    return found


def _archive_object(key: str, data: bytes) -> list[FoundJob]:
    raw = orjson.loads(data)
    if raw.get("schema_version") != SCHEMA_VERSION or raw.get("key") != key:
        raise ValueError(f"header { ({k: v for k, v in raw.items() if k != 'jobs'})!r}")
    jobs = []
    for record in raw["jobs"]:
        if record.get("archive_key") != key:
            raise ValueError(
                f"job {record.get('id')!r} has archive_key {record.get('archive_key')!r}"
            )
        jobs.append(
            FoundJob(
                id=record["id"],
                seq=record["seq"],
                payload=base64.b64decode(record["born"]["data"], validate=True),
                status=record.get("status", "ready"),
                attempts=record.get("attempts", 0),
                claimed_by=record.get("claimed_by"),
                where=key,
            )
        )
    return jobs


def verify(
    ledger: Ledger,
    state_data: bytes | None,
    archive_objects: dict[str, bytes | None],
) -> Verdict:
    """Every check of the soak, and the figures they count."""
    verdict = Verdict()
    parse = verdict.check("the state and archive objects parse; the state is released")
    in_state, in_segments = state_jobs(state_data, parse)
    archived = archive_jobs(archive_objects, parse)

    empty = verdict.check("no job is left in the state (or its segments) after the drain")
    for job in in_state:
        empty.fail(f"{job.id} ({job.status}, payload {job.payload[:40]!r})")
    for key, count in in_segments.items():
        empty.fail(f"{count} jobs untouched in segment {key}")

    by_id = _check_archive_unique(verdict, archived)
    found = archived + in_state
    _check_pushes(verdict, ledger, found, by_id)
    _check_completions(verdict, ledger, by_id)
    _check_claims(verdict, ledger, by_id)

    unexpected = verdict.check("clients saw no unexpected error")
    for line in ledger.unexpected:
        unexpected.fail(line)

    verdict.figures["archive objects"] = len(archive_objects)
    verdict.figures["archive records"] = len(archived)
    return verdict


def _check_archive_unique(verdict: Verdict, archived: list[FoundJob]) -> dict[str, FoundJob]:
    unique = verdict.check("no job id (or seq) appears twice across the archive objects")
    by_id: dict[str, FoundJob] = {}
    for job_id, count in Counter(job.id for job in archived).items():
        if count > 1:
            places = [job.where for job in archived if job.id == job_id]
            unique.fail(f"{job_id} archived {count} times: {places}")
    for seq, count in Counter(job.seq for job in archived).items():
        if count > 1:
            unique.fail(f"seq {seq} in {count} archived jobs")
    finished = verdict.check("every archived record is completed (nothing was dead-lettered)")
    for job in archived:
        by_id.setdefault(job.id, job)
        if job.status != "completed":
            finished.fail(f"{job.id} in {job.where} has status {job.status!r}")
    return by_id


def _check_pushes(
    verdict: Verdict, ledger: Ledger, found: list[FoundJob], archived: dict[str, FoundJob]
) -> None:
    invented = verdict.check("every job carries a payload a publisher sent (nothing invented)")
    twice = verdict.check("no push applied twice; a batch lands whole or not at all")
    kept = verdict.check("every acknowledged push was completed and archived, as answered")

    jobs_by_payload: defaultdict[bytes, list[FoundJob]] = defaultdict(list)
    for job in found:
        jobs_by_payload[job.payload].append(job)
        name = parse_payload(job.payload)
        call = ledger.calls.get(name.call) if name is not None else None
        if call is None or job.payload not in call.payloads:
            invented.fail(f"{job.id} in {job.where}: payload {job.payload[:60]!r} was never sent")

    lost = 0
    unacked_landed_calls = 0
    unacked_landed_jobs = 0
    jobs_per_logical: Counter[tuple[int, str, int, int]] = Counter()
    for key, call in ledger.calls.items():
        landed = [jobs_by_payload.get(payload, []) for payload in call.payloads]
        for payload, jobs in zip(call.payloads, landed, strict=True):
            if len(jobs) > 1:
                twice.fail(f"payload {payload[:40]!r} in {len(jobs)} jobs: {[j.id for j in jobs]}")
            name = parse_payload(payload)
            assert name is not None
            jobs_per_logical[name.logical] += len(jobs)
        landed_count = sum(1 for jobs in landed if jobs)
        if 0 < landed_count < len(call.payloads):
            twice.fail(f"push call {key}: {landed_count} of {len(call.payloads)} payloads landed")
        if call.acked_ids is None:
            if landed_count:
                unacked_landed_calls += 1
                unacked_landed_jobs += landed_count
            continue
        for payload, job_id, jobs in zip(call.payloads, call.acked_ids, landed, strict=True):
            stored = archived.get(job_id)
            if stored is None and not any(job.id == job_id for job in found):
                lost += 1
                kept.fail(f"acknowledged {job_id} ({payload[:40]!r}) is nowhere in storage")
            elif stored is None:
                kept.fail(f"acknowledged {job_id} ({payload[:40]!r}) is in the state, not archived")
            elif stored.payload != payload:
                kept.fail(
                    f"acknowledged {job_id}: archived payload {stored.payload[:40]!r} != sent"
                )
            elif [j.id for j in jobs] != [job_id]:
                kept.fail(
                    f"payload {payload[:40]!r} acknowledged as {job_id} but stored as "
                    f"{[j.id for j in jobs]}"
                )
    figures = verdict.figures
    figures["push calls (attempts)"] = len(ledger.calls)
    figures["push calls unanswered"] = sum(1 for c in ledger.calls.values() if c.acked_ids is None)
    figures["pushes acknowledged (jobs)"] = ledger.pushes_acked
    figures["unacknowledged pushes that landed (calls/jobs)"] = (
        f"{unacked_landed_calls}/{unacked_landed_jobs}"
    )
    figures["duplicates from retried pushes (jobs)"] = sum(
        count - 1 for count in jobs_per_logical.values() if count > 1
    )
    figures["lost (must be 0)"] = lost


def _check_completions(verdict: Verdict, ledger: Ledger, archived: dict[str, FoundJob]) -> None:
    once = verdict.check("no job's Complete was acknowledged twice")
    recorded = verdict.check("each acknowledged Complete is archived under its worker")
    doubles = 0
    for job_id, acks in ledger.completions.items():
        if len(acks) > 1:
            doubles += 1
            once.fail(f"{job_id} completed for {[worker for worker, _ in acks]}")
        job = archived.get(job_id)
        if job is None:
            recorded.fail(f"{job_id}: Complete acknowledged but the job is not archived")
        elif job.claimed_by not in {worker for worker, _ in acks}:
            recorded.fail(
                f"{job_id}: archived as claimed by {job.claimed_by!r}, completed for "
                f"{[worker for worker, _ in acks]}"
            )
    figures = verdict.figures
    figures["claims acknowledged"] = len(ledger.grants)
    figures["heartbeats acknowledged"] = ledger.heartbeats_acked
    figures["fails (requeue) acknowledged"] = sum(len(w) for w in ledger.fails.values())
    figures["completions acknowledged"] = ledger.completions_acked
    figures["double completions (must be 0)"] = doubles


def _check_claims(verdict: Verdict, ledger: Ledger, archived: dict[str, FoundJob]) -> None:
    consistent = verdict.check("every claim handed out a stored job, intact, attempts rising")
    exclusive = verdict.check("no job was handed to a worker while another held it")
    grants_by_job: defaultdict[str, list[Grant]] = defaultdict(list)
    for grant in ledger.grants:
        grants_by_job[grant.job_id].append(grant)
    overlaps = 0
    for job_id, grants in grants_by_job.items():
        grants.sort(key=lambda g: g.received_at)
        job = archived.get(job_id)
        if job is None:
            consistent.fail(f"{job_id}: claimed {len(grants)} times but not archived")
        for grant in grants:
            if job is not None and (grant.payload != job.payload or grant.attempts > job.attempts):
                consistent.fail(
                    f"{job_id}: claimed by {grant.worker} with attempts "
                    f"{grant.attempts}, payload {grant.payload[:40]!r}; archived "
                    f"with {job.attempts}, {job.payload[:40]!r}"
                )
        for earlier, later in itertools.pairwise(grants):
            if later.attempts <= earlier.attempts:
                consistent.fail(
                    f"{job_id}: attempts {earlier.attempts} ({earlier.worker}) then "
                    f"{later.attempts} ({later.worker})"
                )
        for first, second in _pairs(grants):
            if _overlap(first, second):
                overlaps += 1
                exclusive.fail(
                    f"{job_id}: {second.worker} got it {first.hold_end - second.received_at:.3f}s "
                    f"before {first.worker}'s lease could end (claims sent at "
                    f"{first.sent_at:.3f} and {second.sent_at:.3f}, answered "
                    f"{first.received_at:.3f} and {second.received_at:.3f})"
                )
        for worker, acked_at in ledger.completions.get(job_id, []):
            for grant in grants:
                if grant.sent_at > acked_at:
                    exclusive.fail(
                        f"{job_id}: handed to {grant.worker} after its Complete "
                        f"was acknowledged to {worker}"
                    )
    verdict.figures["jobs held by two workers at once (must be 0)"] = overlaps


def _pairs(grants: list[Grant]) -> Iterable[tuple[Grant, Grant]]:
    for index, first in enumerate(grants):
        for second in grants[index + 1 :]:
            yield first, second


def _overlap(first: Grant, second: Grant) -> bool:
    """Whether two grants of one job (``first`` answered earlier) certainly overlapped.

    If ``first`` was answered before ``second`` was sent, it was granted first, and
    ``second`` came too early if it was answered before ``first``'s lease could end.
    If the two calls overlapped in time, either may have been granted first: it is a
    certain overlap only if it is one whichever came first.
    """
    second_too_early = second.received_at < first.hold_end
    if first.received_at < second.sent_at:
        return second_too_early
    return second_too_early and first.received_at < second.hold_end
