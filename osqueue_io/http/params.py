"""Reading the dashboard's query parameters and forms within limits.

Every value comes from whoever sent the request: each has a length or range limit, and
anything out of it is :class:`BadRequest` (a 400 page that says which parameter and
why), never an exception escaping the handler or a value used unchecked.
"""

from __future__ import annotations

from collections.abc import Mapping

from osqueue_core import (
    MAX_ID_LENGTH,
    InvalidArgument,
    check_id,
    check_queue_name,
)

#: The longest query string the dashboard reads (the longest valid one is far shorter).
MAX_QUERY_LENGTH = 2048


class BadRequest(Exception):
    """A parameter is missing, malformed or out of range: answered 400, with ``message``
    (which never repeats more than a short, escaped part of the value)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def text(params: Mapping[str, str], name: str, limit: int) -> str | None:
    """The parameter ``name`` (None when absent or empty), at most ``limit`` characters."""
    value = params.get(name)
    if not value:
        return None
    if len(value) > limit:
        raise BadRequest(f"{name} is {len(value)} characters long; the limit is {limit}")
    return value


def number(params: Mapping[str, str], name: str, low: int, high: int, default: int) -> int:
    """The integer parameter ``name`` in ``[low, high]`` (``default`` when absent)."""
    value = text(params, name, 20)
    if value is None:
        return default
    if not value.isascii() or not value.isdigit():
        raise BadRequest(f"{name} must be a whole number")
    parsed = int(value)
    if not low <= parsed <= high:
        raise BadRequest(f"{name} must be between {low} and {high}")
    return parsed


def queue(params: Mapping[str, str], name: str = "queue") -> str | None:
    """A queue name (the broker's rules: 64 characters of ``[A-Za-z0-9._:-]``)."""
    value = text(params, name, 64)
    if value is not None:
        try:
            check_queue_name(value)
        except InvalidArgument as error:
            raise BadRequest(f"{name}: {error}") from None
    return value


def job_id(params: Mapping[str, str], name: str = "job_id") -> str:
    """A job id (required): non-empty, at most ``MAX_ID_LENGTH`` characters."""
    value = text(params, name, MAX_ID_LENGTH)
    if value is None:
        raise BadRequest(f"{name} is required")
    try:
        check_id(name, value)
    except InvalidArgument as error:
        raise BadRequest(str(error)) from None
    return value


def choice(params: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str | None:
    """One of ``choices`` (None when absent)."""
    value = text(params, name, 32)
    if value is not None and value not in choices:
        raise BadRequest(f"{name} must be one of: {', '.join(choices)}")
    return value
