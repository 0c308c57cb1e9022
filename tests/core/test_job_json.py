"""osqueue_core.job_json against the codec's cattrs converter: the same bytes, the same
jobs.

Jobs are drawn with every field, at the edges of its type; each is encoded by both and
read back by both. Damaged records (a field of another JSON type, a field missing, an
unknown field, odd base64) are read by both: whenever the hand-written reader gives a
job, the converter gives the same one (otherwise the reader declines and the converter
decides, with its own error message).
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from osqueue_core import CorruptState, Job, JobSpec, JobStatus, decode_state, encode_state
from osqueue_core.codec import _converter, decode_job
from osqueue_core.job_json import encode_job, job_from_record, right_sized
from tests.core.test_codec import HEADER

_times = st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from(
    [0.0, -0.0, 1.5, 1e16, 1.7e9 + 0.123456, 2.0**53, 5e-324]
)
_ints = st.integers(min_value=-(2**63), max_value=2**63 - 1) | st.sampled_from([0, 1, -1])
_texts = st.text(max_size=6) | st.sampled_from(["default", "", '"}', "é\u2028\x00"])


def _optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


specs = st.builds(
    JobSpec,
    payload=st.binary(max_size=12),
    created_at=_times,
    queue=_texts,
    priority=_ints,
    run_at=_optional(_times),
    key=_optional(_texts),
    max_attempts=_optional(_ints),
)
jobs = st.builds(
    Job,
    id=_texts,
    seq=_ints,
    born=specs,
    status=st.sampled_from(JobStatus),
    attempts=_ints,
    claimed_by=_optional(_texts),
    claimed_at=_optional(_times),
    finished_at=_optional(_times),
    archive_key=_optional(_texts),
    last_error=_optional(_texts),
    retry_at=_optional(_times),
    cancel_requested=st.booleans(),
    result=_optional(st.binary(max_size=12)),
)

_json_values = st.recursive(
    st.none()
    | st.booleans()
    | _ints
    | _times
    | _texts
    | st.text(alphabet="AQID+/=a\n é", max_size=9),  # base64 and near misses
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(_texts, inner, max_size=2),
    max_leaves=4,
)


def converter_bytes(job: Job) -> bytes:
    return right_sized(orjson.dumps(_converter.unstructure(job, Job)))


def converter_job(record: Any) -> Job | None:
    try:
        job: Job = _converter.structure(record, Job)
    except Exception:  # cattrs raises ClassValidationError and friends
        return None
    return job


@settings(max_examples=500, deadline=None)
@given(job=jobs)
def test_the_same_bytes_and_jobs_as_the_converter(job: Job) -> None:
    data = encode_job(job)
    assert data == converter_bytes(job)
    record = orjson.loads(data)
    assert job_from_record(record) == converter_job(record) == job
    assert encode_job(job_from_record(record)) == data  # type: ignore[arg-type]


@settings(max_examples=500, deadline=None)
@given(job=jobs, data=st.data())
def test_a_damaged_record_is_read_as_the_converter_reads_it_or_left_to_it(
    job: Job, data: st.DataObject
) -> None:
    record = orjson.loads(encode_job(job))
    target = record if data.draw(st.booleans()) else record["born"]
    name = data.draw(st.sampled_from([*target, "id", "data", "unknown", "status", "result"]))
    if data.draw(st.booleans()):
        target[name] = data.draw(_json_values)
    else:
        target.pop(name, None)
    fast = job_from_record(record)
    if fast is not None:
        slow = converter_job(record)
        assert slow == fast
        assert encode_job(fast) == encode_job(slow)  # same types too (1 is not 1.0)


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet="AQID+/=a\n é-_", max_size=10), in_result=st.booleans())
def test_base64_is_read_as_strictly_as_the_converter_reads_it(text: str, in_result: bool) -> None:
    record = orjson.loads(encode_job(Job("a", 1, JobSpec(b"x", 1.0))))
    if in_result:
        record["result"] = text
    else:
        record["born"]["data"] = text
    assert job_from_record(record) == converter_job(record)


@settings(max_examples=200, deadline=None)
@given(record=_json_values)
def test_anything_else_is_left_to_the_converter(record: Any) -> None:
    fast = job_from_record(record)
    assert fast is None or fast == converter_job(record)


def test_a_damaged_record_gets_the_converters_message() -> None:
    record = orjson.loads(encode_job(Job("a", 1, JobSpec(b"x", 1.0))))
    record["born"]["priority"] = "high"
    with pytest.raises(CorruptState, match=r"\$\.born\.priority"):
        decode_job(record)


def test_a_damaged_job_in_a_state_names_its_place_in_the_list() -> None:
    good = encode_job(Job("a", 0, JobSpec(b"x", 1.0)))
    bad = encode_job(Job("b", 1, JobSpec(b"y", 1.0))).replace(b'"seq":1', b'"seq":"1"')
    data = encode_state(HEADER, [good, bad])
    with pytest.raises(CorruptState, match=r"\$\.jobs\[1\]\.seq"):
        decode_state(data)
