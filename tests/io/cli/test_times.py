"""Times as the command line reads them, and the hourly buckets a range covers."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from osqueue_io.cli.archive import hour_buckets
from osqueue_io.cli.times import BadTime, format_time, parse_time

NOW = datetime(2026, 12, 1, 17, 30, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("text", "seconds_ago"),
    [("now", 0), ("30m", 1800), ("1h30m", 5400), ("2d", 172800), ("1w", 604800), ("45s", 45)],
)
def test_spans_ago(text: str, seconds_ago: float) -> None:
    assert parse_time(text, NOW) == NOW - seconds_ago


def test_iso_times_are_utc_unless_they_say_otherwise() -> None:
    assert parse_time("2026-12-01T17:30", NOW) == NOW
    assert parse_time("2026-12-01T18:30+01:00", NOW) == NOW
    assert format_time(NOW) == "2026-12-01T17:30:00Z"


@pytest.mark.parametrize("text", ["", "yesterday", "1h 30m", "30", "-1h", "1y", "367d", "9" * 70])
def test_refused(text: str) -> None:
    with pytest.raises(BadTime) as refused:
        parse_time(text, NOW)
    assert len(str(refused.value)) < 200  # quotes at most a few dozen characters


@pytest.mark.parametrize(
    "text",
    [
        "0001-01-01T00:00+01:00",
        "0001-01-01T00:00",
        "1969-12-31T23:59:59",
        "1970-01-01T00:30+01:00",
        "9999-12-31T23:59:59-12:00",
        "9999-01-01T00:00",
    ],
)
def test_times_outside_the_years_an_archive_can_hold_are_refused(text: str) -> None:
    with pytest.raises(BadTime, match="1970"):
        parse_time(text, NOW)


def test_the_edges_of_the_years_an_archive_can_hold() -> None:
    for text in ("1970-01-01T00:00", "9998-12-31T23:59:59"):
        moment = parse_time(text, NOW)
        assert hour_buckets(moment, moment)  # no year out of range


def test_hour_buckets_cover_the_range_inclusively() -> None:
    since = parse_time("2026-12-01T15:59:59", NOW)
    assert hour_buckets(since, NOW) == ["2026-12-01T15", "2026-12-01T16", "2026-12-01T17"]
    assert hour_buckets(NOW, NOW) == ["2026-12-01T17"]
