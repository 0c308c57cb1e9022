"""Points in time as the command line takes them: ISO 8601, or a span ago.

``--since 2026-11-18T11:00`` (no offset means UTC), ``--since 2026-11-18T11:00+01:00``,
``--since 1h`` (an hour ago: ``s``, ``m``, ``h``, ``d``, ``w``, combined as ``1h30m``) and
``now``. Every time is a float of UNIX seconds; ``now`` is passed in, so parsing is a pure
function of its text.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from osqueue_core import quote

__all__ = ["MAX_SPAN", "BadTime", "format_time", "parse_time"]

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}
_SPAN_PART = re.compile(r"(\d{1,9})([smhdw])")
#: Longest text taken as a time (an ISO timestamp with an offset and microseconds is 32).
MAX_TIME_TEXT = 64
#: The furthest back a relative time may reach, and the longest range a scan may cover:
#: a year and a day (8,784 hourly archive buckets).
MAX_SPAN = 366 * 86400.0
#: The years a time given as ISO 8601 may fall in (UTC): nothing is archived before UNIX
#: time 0, and the hour buckets of a range reaching year 1 or 9999 (after its offset)
#: would fall outside ``datetime``'s years.
FIRST_YEAR, LAST_YEAR = 1970, 9998
_EARLIEST = datetime(FIRST_YEAR, 1, 1, tzinfo=UTC).timestamp()
_LATEST = datetime(LAST_YEAR + 1, 1, 1, tzinfo=UTC).timestamp()


class BadTime(ValueError):
    """A time the command line cannot read; the message says what to write instead."""


def parse_time(text: str, now: float) -> float:
    """UNIX seconds for ``text``: ISO 8601 (UTC unless it has an offset), a span ago
    (``30m``, ``1h30m``, ``2d``), or ``now``. Raises :class:`BadTime`."""
    text = text.strip()
    if len(text) > MAX_TIME_TEXT:
        raise BadTime(f"{quote(text)} is too long to be a time")
    if text == "now":
        return now
    span = _span(text)
    if span is not None:
        if span > MAX_SPAN:
            raise BadTime(f"{quote(text)} reaches back more than {MAX_SPAN / 86400:g} days")
        return now - span
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise BadTime(
            f"{quote(text)} is not a time: use ISO 8601 (2026-11-18T11:00, UTC unless an "
            "offset is given), a span ago (30m, 1h30m, 2d) or now"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    seconds = moment.timestamp()
    if not _EARLIEST <= seconds < _LATEST:
        raise BadTime(f"{quote(text)} is not between the years {FIRST_YEAR} and {LAST_YEAR} (UTC)")
    return seconds


def _span(text: str) -> float | None:
    """Seconds in ``1h30m``-style text, or None if it is not such a span."""
    position, seconds = 0, 0.0
    for match in _SPAN_PART.finditer(text):
        if match.start() != position:
            return None
        seconds += int(match.group(1)) * _UNITS[match.group(2)]
        position = match.end()
    return seconds if text and position == len(text) else None


def format_time(seconds: float | None) -> str:
    """``seconds`` as an ISO 8601 UTC time to the second (empty for None)."""
    if seconds is None:
        return ""
    try:
        return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return f"{seconds:g}"
