"""The model test's reading of segments (tests/core/model_segments.py) agrees with the
documented format: it accepts docs/state-format.md's example segment and reference as
they are, and refuses each of them changed in one way the model must notice."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import orjson
import pytest

from .model_segments import (
    Ref,
    Segment,
    Stored,
    audit_moves,
    check_against_ref,
    check_ref_alone,
    decode_segment,
    digest_of,
    encode_ref,
    parse_ref,
)

DOC = (Path(__file__).parents[2] / "docs" / "state-format.md").read_text()


def _example(after: str) -> Any:
    start = DOC.index("```json", DOC.index(after)) + len("```json")
    return orjson.loads(DOC[start : DOC.index("```", start)])


SEGMENT = orjson.dumps(_example("`segments/000002-0000000001.json`, holding"))
REF = _example("### A reference")


def test_the_documented_example_is_read_as_documented() -> None:
    segment = decode_segment(SEGMENT)
    ref = parse_ref(REF)
    check_ref_alone(ref, "segments/", next_seq=9)
    check_against_ref(segment, SEGMENT, ref)
    assert encode_ref(ref) == orjson.dumps(REF)
    assert ref.untouched() == [1, 2, 3]
    assert [job.seq for job in segment.records] == [5, 6, 8, 7]


def _record(change: Any) -> bytes:
    raw = orjson.loads(SEGMENT)
    change(raw)
    return orjson.dumps(raw)


@pytest.mark.parametrize(
    ("change", "catches"),
    [
        (lambda raw: raw["jobs"].reverse(), "out of claim order|groups"),
        (lambda raw: raw["jobs"][0].update(status="claimed"), "carries"),
        (lambda raw: raw["jobs"][1]["born"].update(queue="mail"), "out of claim order|groups"),
        (lambda raw: raw["groups"][0].__setitem__(4, 1.0), "groups"),
        (lambda raw: raw.update(seqs=raw["seqs"][::-1]), "canonical|base64|Incorrect"),
        (lambda raw: raw.pop("key_index"), "canonical"),
        (lambda raw: raw["jobs"][0].update(attempts=0), "canonical"),
    ],
)
def test_a_segment_changed_is_refused(change: Any, catches: str) -> None:
    with pytest.raises((AssertionError, ValueError), match=catches):
        decode_segment(_record(change))


@pytest.mark.parametrize(
    ("field", "value", "catches"),
    [
        ("bytes", 687, "bytes"),
        ("digest", "0" * 32, "digest"),
        ("seqs", [5, 9], "seq range"),
        ("due", None, "due range"),
        ("keyed", 0, "keyed"),
        ("jobs", 3, "records"),
        ("key", "segments/000002-0000000002.json", "another key"),
    ],
)
def test_a_ref_that_does_not_match_its_segment_is_refused(
    field: str, value: Any, catches: str
) -> None:
    ref = parse_ref({k: v for k, v in {**REF, field: value}.items() if v is not None})
    with pytest.raises(AssertionError, match=catches):
        check_against_ref(decode_segment(SEGMENT), SEGMENT, ref)


@pytest.mark.parametrize(
    ("left", "catches"),
    [([[1, 1], [0, 1]], "not sorted"), ([[0, 1], [1, 1]], "not sorted"), ([[3, 2]], "range")],
)
def test_left_runs_must_be_canonical(left: list[list[int]], catches: str) -> None:
    with pytest.raises(AssertionError, match=catches):
        check_ref_alone(parse_ref({**REF, "left": left}), "segments/", next_seq=9)


def _stored(ref: Ref, segment: Segment, inline: tuple[int, ...] = ()) -> Stored:
    places = {segment.records[p].id: (ref.key, p) for p in ref.untouched()}
    jobs = [segment.records[p] for p in inline]
    return Stored(jobs, [ref], places, jobs, {ref.key: segment})


def test_the_history_audit_sees_a_position_come_back_and_a_record_change() -> None:
    segment = decode_segment(SEGMENT)
    ref = parse_ref(REF)
    all_back = attrs.evolve(ref, left=())
    with pytest.raises(AssertionError, match="untouched again"):
        audit_moves(_stored(ref, segment), _stored(all_back, segment))
    changed = attrs.evolve(segment.records[1], last_error="x")
    before = _stored(all_back, segment)
    before = attrs.evolve(before, inline=[changed], places={})
    with pytest.raises(AssertionError, match="record changed"):
        audit_moves(before, _stored(ref, segment))
    gone = attrs.evolve(ref, left=((0, 4),))
    with pytest.raises(AssertionError, match="not dropped"):
        audit_moves(_stored(gone, segment), _stored(gone, segment))
    assert digest_of(SEGMENT) == REF["digest"]


def _moved(was: Stored, record: Any) -> Stored:
    """``was``'s job at position 2 alone, untouched in another segment as ``record``."""
    key = "segments/000002-0000000009.json"
    segment = Segment(key, (("default", 1, 0, record.seq, 0.0),), (record,))
    ref = Ref(key, "0" * 32, 1, 1, (record.seq, record.seq), segment.groups)
    return Stored([], [ref], {record.id: (key, 0)}, [record], {key: segment})


def test_the_history_audit_lets_a_job_claimed_meanwhile_move_changed() -> None:
    """Between two versions a job may leave a segment (claimed), come back ready (a
    retry counts an attempt; a release clears the retry time) and be spilled again:
    the history audit checks that claim. Any other change is still a changed record."""
    segment = decode_segment(SEGMENT)
    before = _stored(attrs.evolve(parse_ref(REF), left=()), segment)
    retried = segment.records[2]
    assert retried.retry_at is not None
    assert retried.attempts == 1
    audit_moves(before, _moved(before, attrs.evolve(retried, retry_at=None)))
    again = attrs.evolve(retried, attempts=2, retry_at=retried.retry_at + 5.0)
    audit_moves(before, _moved(before, again))
    later = _moved(before, attrs.evolve(retried, retry_at=retried.retry_at + 5.0))
    with pytest.raises(AssertionError, match="record changed"):
        audit_moves(before, later)
