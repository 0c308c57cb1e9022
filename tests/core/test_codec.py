"""The state encoding: canonical round trips, and typed errors for anything unreadable."""

from __future__ import annotations

import tracemalloc

import attrs
import orjson
import pytest

from osqueue_core import (
    SCHEMA_VERSION,
    CorruptState,
    Job,
    JobSpec,
    JobStatus,
    Owner,
    StateHeader,
    UnsupportedSchema,
    decode_header,
    decode_state,
    encode_job,
    encode_state,
)

HEADER = StateHeader(SCHEMA_VERSION, 7, Owner("host", "inc-1", 3, "10.0.0.1:9090"), 3)
JOBS = [
    Job("a", 0, JobSpec(b"\x00\xffbinary", 1.5)),
    Job(
        "b",
        2,
        JobSpec(b"", 2.0, queue="mail", priority=-3, run_at=9.5, key="k1", max_attempts=4),
        JobStatus.CLAIMED,
        1,
        "w1",
        3.25,
        cancel_requested=True,
    ),
]


def encoded() -> bytes:
    return encode_state(HEADER, [encode_job(j) for j in JOBS])


def test_round_trip_is_canonical() -> None:
    data = encoded()
    decoded = decode_state(data)
    assert decoded.header == HEADER
    assert decoded.jobs == JOBS
    assert encode_state(decoded.header, [encode_job(j) for j in decoded.jobs]) == data


def test_payload_is_base64_under_data_and_defaults_are_omitted() -> None:
    raw = orjson.loads(encoded())
    born = {"data": "AP9iaW5hcnk=", "created_at": 1.5}
    assert raw["jobs"][0] == {"id": "a", "seq": 0, "born": born}
    assert list(raw) == ["schema_version", "revision", "owner", "next_seq", "jobs"]
    assert list(raw["jobs"][1]) == [
        "id",
        "seq",
        "born",
        "status",
        "attempts",
        "claimed_by",
        "claimed_at",
        "cancel_requested",
    ]


def test_a_job_fragment_takes_only_the_memory_its_length_needs() -> None:
    # orjson.dumps keeps small results in an over-allocated buffer (~4 KB of RSS); the
    # job table caches one fragment per job for the job's life: a right-sized copy.
    jobs = [Job(f"job-{i}", i, JobSpec(b"x" * 100, 1.5)) for i in range(200)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        fragments = [encode_job(job) for job in jobs]
        per_fragment = (tracemalloc.get_traced_memory()[0] - before) / len(fragments)
    finally:
        tracemalloc.stop()
    assert per_fragment < 2 * len(fragments[0])


def test_header_is_read_without_the_jobs() -> None:
    assert decode_header(encoded()) == HEADER


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d[:-3], "not valid JSON"),
        (lambda d: b"[1]", "not a JSON object"),
        (lambda d: d.replace(b'"schema_version":4', b'"schema_version":"4"'), "schema_version"),
        (lambda d: d.replace(b'"seq":2', b'"seq":"2"'), "jobs[1].seq"),
        (lambda d: d.replace(b'"AP9iaW5hcnk="', b'"***"'), "jobs[0].born.payload"),
        (lambda d: d.replace(b'"claimed"', b'"lost"'), "jobs[1].status"),
        (lambda d: d.replace(b'"revision"', b'"surprise":1,"revision"'), "extra fields"),
        (lambda d: d.replace(b',"jobs":[', b',"jobz":['), "no jobs list"),
        (lambda d: d.replace(b'"seq":2', b'"seq":0'), "duplicate"),
        (lambda d: d.replace(b'"seq":2', b'"seq":9'), "outside"),
        (lambda d: d.replace(b'"claimed_by":"w1",', b""), "no claimed_by"),
        (lambda d: d.replace(b'"attempts":1', b'"attempts":-1'), "attempts out of range"),
        (lambda d: d.replace(b'"next_seq":3', b'"next_seq":-1'), "next_seq below 0"),
        (lambda d: d.replace(b'"incarnation":"inc-1"', b'"incarnation":""'), "empty identity"),
        (lambda d: d.replace(b'"status":"claimed",', b""), "ready but still has"),
        (
            lambda d: d.replace(b'"created_at":1.5}', b'"created_at":1.5},"archive_key":"k"'),
            "archive_key",
        ),
        (lambda d: d.replace(b'"queue":"mail"', b'"queue":"m a i l"'), "invalid queue name"),
        (lambda d: d.replace(b'"priority":-3', b'"priority":99999999999'), "priority"),
        (lambda d: d.replace(b'"max_attempts":4', b'"max_attempts":0'), "max_attempts"),
        (lambda d: d.replace(b'"key":"k1"', b'"key":""'), "key length"),
        (lambda d: d.replace(b'"claimed_by":"w1",', b'"status":"ready"'), "extra fields|JSON"),
        (
            lambda d: d.replace(
                b'"status":"claimed","attempts":1,"claimed_by":"w1","claimed_at":3.25,',
                b'"status":"dead",',
            ),
            "cancel_requested",
        ),
    ],
)
def test_corrupt_state_is_a_typed_error(mutate, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(CorruptState, match=message.replace("[", r"\[").replace("]", r"\]")):
        decode_state(mutate(encoded()))


def test_newer_schema_is_refused_by_full_and_header_decode() -> None:
    newer = encoded().replace(b'"schema_version":4', b'"schema_version":5')
    with pytest.raises(UnsupportedSchema) as info:
        decode_state(newer)
    assert info.value.found == 5
    with pytest.raises(UnsupportedSchema):
        decode_header(newer)


V1_STATE = (
    b'{"schema_version":1,"revision":4,"owner":{"identity":"h","incarnation":"i","epoch":2},'
    b'"next_seq":3,"jobs":[{"id":"a","seq":0,"data":"eA==","created_at":1.5},'
    b'{"id":"b","seq":2,"data":"","created_at":2.0,"status":"dead",'
    b'"finished_at":3.0,"archive_key":"archive/x","last_error":"boom"}]}'
)


def test_a_schema_1_state_is_read_and_rewritten_as_schema_2() -> None:
    decoded = decode_state(V1_STATE)
    assert decoded.header.schema_version == 1
    assert decode_header(V1_STATE).revision == 4
    assert decoded.jobs[0] == Job("a", 0, JobSpec(b"x", 1.5))
    dead = decoded.jobs[1]
    assert (dead.payload, dead.queue, dead.status, dead.last_error) == (
        b"",
        "default",
        JobStatus.DEAD,
        "boom",
    )
    rewritten = orjson.loads(encode_job(dead))
    assert rewritten["born"] == {"data": "", "created_at": 2.0}


@pytest.mark.parametrize(
    "job",
    [
        b'{"id":"a","seq":0,"data":"eA==","created_at":1.5,"queue":"q"}',
        b'{"id":"a","seq":0,"born":{"data":"eA==","created_at":1.5}}',
    ],
)
def test_a_schema_1_job_with_schema_2_fields_is_corrupt(job: bytes) -> None:
    state = V1_STATE.replace(b'{"id":"a","seq":0,"data":"eA==","created_at":1.5}', job)
    with pytest.raises(CorruptState):
        decode_state(state)


def test_remembered_keys_round_trip_and_are_canonical() -> None:
    from osqueue_core import RememberedKey

    keys = (RememberedKey("default", "k1", "a", 5.5), RememberedKey("mail", "k2", "b", 7.0))
    header = attrs.evolve(HEADER, keys=keys)
    data = encode_state(header, [encode_job(j) for j in JOBS])
    raw = orjson.loads(data)
    assert list(raw) == ["schema_version", "revision", "owner", "next_seq", "keys", "jobs"]
    assert raw["keys"][1] == {"queue": "mail", "key": "k2", "job_id": "b", "until": 7.0}
    decoded = decode_state(data)
    assert decoded.header == header
    assert decode_header(data) == header
    assert encode_state(decoded.header, [encode_job(j) for j in decoded.jobs]) == data
