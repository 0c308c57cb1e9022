"""Limits on every piece of text a request carries, and how errors quote untrusted text.

Every string field of every request has a limit here, checked before anything else is
done with it; the size limits on payloads and batches are ``BrokerConfig`` settings.
An error message never repeats untrusted input whole: it quotes at most
:data:`QUOTE_LENGTH` characters of it (:func:`quote`), so an attacker cannot make a reply
(a gRPC status message, a log line) as large as their request. docs/reliability.md has
the full table.
"""

from __future__ import annotations

import math

from osqueue_core.errors import InvalidArgument
from osqueue_core.quoting import QUOTE_LENGTH, quote

__all__ = ["MAX_CLAIM_WAIT", "MAX_ERROR_LENGTH", "MAX_ID_LENGTH", "QUOTE_LENGTH", "quote"]

#: Longest job id, worker id or broker identity, in characters.
MAX_ID_LENGTH = 256
#: Longest error text a worker may attach to a failed job, in characters.
MAX_ERROR_LENGTH = 4096
#: Longest a claim may wait for a job, in seconds (clients long-poll in a loop).
MAX_CLAIM_WAIT = 3600.0


def check_id(name: str, value: object) -> str:
    """``value`` if it is a non-empty string of at most :data:`MAX_ID_LENGTH` characters.

    Raises :class:`~osqueue_core.errors.InvalidArgument` naming the field and the limit,
    never repeating an over-long value.
    """
    if not isinstance(value, str):
        raise InvalidArgument(f"{name} must be a string, got {type(value).__name__}")
    if not value:
        raise InvalidArgument(f"{name} must be a non-empty string")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidArgument(
            f"{name} is {len(value)} characters long; the limit is {MAX_ID_LENGTH}"
        )
    return value


def check_error_text(value: object) -> str:
    """``value`` if it is a string of at most :data:`MAX_ERROR_LENGTH` characters
    (empty allowed). Clients cut longer texts with :func:`clip_error_text` first."""
    if not isinstance(value, str):
        raise InvalidArgument(f"an error text must be a string, got {type(value).__name__}")
    if len(value) > MAX_ERROR_LENGTH:
        raise InvalidArgument(
            f"the error text is {len(value)} characters long; the limit is "
            f"{MAX_ERROR_LENGTH} (cut it, e.g. with osqueue_core.clip_error_text)"
        )
    return value


def clip_error_text(text: str) -> str:
    """``text`` cut to :data:`MAX_ERROR_LENGTH` characters, keeping its start and end
    (a traceback's last lines say the most)."""
    if len(text) <= MAX_ERROR_LENGTH:
        return text
    template = "\n… [{} characters cut] …\n"
    keep = MAX_ERROR_LENGTH - len(template.format(len(text)))
    head, tail = keep // 2, keep - keep // 2
    # Fewer digits than len(text) at most: the result never exceeds the limit.
    return text[:head] + template.format(len(text) - keep) + text[len(text) - tail :]


def check_wait(value: object) -> float:
    """A claim's wait in seconds: a finite number in ``[0, MAX_CLAIM_WAIT]``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgument(f"wait must be a number of seconds, got {type(value).__name__}")
    if not math.isfinite(value) or not 0 <= value <= MAX_CLAIM_WAIT:
        raise InvalidArgument(
            f"wait must be between 0 and {MAX_CLAIM_WAIT:g} seconds, got {quote(value)}"
        )
    return float(value)
