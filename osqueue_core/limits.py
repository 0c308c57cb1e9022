"""Limits on every piece of text a request carries, and how errors quote untrusted text.

Every string field of every request has a limit here, checked before anything else is
done with it; the size limits on payloads and batches are ``BrokerConfig`` settings.
An error message never repeats untrusted input whole: it quotes at most
:data:`QUOTE_LENGTH` characters of it (:func:`quote`), so an attacker cannot make a reply
(a gRPC status message, a log line) as large as their request. docs/reliability.md has
the full table.
"""

from __future__ import annotations

import functools
import math
import re

from osqueue_core.errors import InvalidArgument
from osqueue_core.quoting import QUOTE_LENGTH, quote

__all__ = [
    "MAX_CLAIM_COUNT",
    "MAX_CLAIM_WAIT",
    "MAX_COUNTER",
    "MAX_DELAY",
    "MAX_ERROR_LENGTH",
    "MAX_ID_LENGTH",
    "MAX_KEY_LENGTH",
    "MAX_PRIORITY",
    "MAX_QUEUES_PER_CLAIM",
    "MAX_QUEUE_NAME_LENGTH",
    "QUOTE_LENGTH",
    "quote",
]

#: Longest job id, worker id or broker identity, in characters.
MAX_ID_LENGTH = 256
#: Longest error text a worker may attach to a failed job, in characters.
MAX_ERROR_LENGTH = 4096
#: Longest a claim may wait for a job, in seconds (clients long-poll in a loop).
MAX_CLAIM_WAIT = 3600.0
#: Longest queue name, in characters; names use ``[A-Za-z0-9._:-]``, starting with a
#: letter or digit (they appear in object keys, metrics labels and URLs).
MAX_QUEUE_NAME_LENGTH = 64
#: Longest idempotency key, in characters.
MAX_KEY_LENGTH = 256
#: Priorities lie in ``[-MAX_PRIORITY, MAX_PRIORITY]`` (a 32-bit integer on the wire).
MAX_PRIORITY = 2**31 - 1
#: The longest delay a push may ask for, in seconds (about ten years).
MAX_DELAY = 10 * 366 * 86400.0
#: Most jobs one claim may take, and most queues it may name.
MAX_CLAIM_COUNT = 1000
MAX_QUEUES_PER_CLAIM = 64
#: Counters (epoch, revision, seq, attempts) stay below this: exact in every JSON reader
#: (JavaScript's doubles included) and far from 64-bit limits.
MAX_COUNTER = 2**53 - 1
#: An owner's lease (docs/high-availability.md) lies in this range, in seconds: a shorter
#: one would make the owner write several times a second while idle (GCS allows about
#: one write per second per object); a longer one makes failover needlessly slow.
MIN_LEASE = 1.0
MAX_LEASE = 3600.0

_QUEUE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]*")


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
    return check_seconds("wait", value, MAX_CLAIM_WAIT)


def check_queue_name(value: object) -> str:
    """``value`` if it is a valid queue name (see :data:`MAX_QUEUE_NAME_LENGTH`)."""
    if not isinstance(value, str):
        raise InvalidArgument(f"a queue name must be a string, got {type(value).__name__}")
    if not 0 < len(value) <= MAX_QUEUE_NAME_LENGTH:
        raise InvalidArgument(
            f"a queue name must be 1 to {MAX_QUEUE_NAME_LENGTH} characters long, got {len(value)}"
        )
    if not _valid_queue_name(value):
        raise InvalidArgument(
            f"queue name {quote(value)} has characters outside [A-Za-z0-9._:-] (or does "
            "not start with a letter or digit)"
        )
    return value


@functools.lru_cache(maxsize=1024)
def _valid_queue_name(value: str) -> bool:
    # Cached: a queue's name is checked with every job pushed to it (at most 64
    # characters each, so the cache stays small).
    return _QUEUE_NAME.fullmatch(value) is not None


def check_queues(value: object) -> tuple[str, ...]:
    """A claim's queue names: 1 to :data:`MAX_QUEUES_PER_CLAIM` valid names."""
    if not isinstance(value, tuple | list):
        raise InvalidArgument("queues must be a list of queue names")
    if not 0 < len(value) <= MAX_QUEUES_PER_CLAIM:
        raise InvalidArgument(f"a claim names 1 to {MAX_QUEUES_PER_CLAIM} queues, got {len(value)}")
    return tuple(check_queue_name(name) for name in value)


def check_key(value: object) -> str | None:
    """An idempotency key: None, or 1 to :data:`MAX_KEY_LENGTH` characters."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidArgument(f"a key must be a string, got {type(value).__name__}")
    if not 0 < len(value) <= MAX_KEY_LENGTH:
        raise InvalidArgument(
            f"a key must be 1 to {MAX_KEY_LENGTH} characters long, got {len(value)}"
        )
    return value


def check_int(name: str, value: object, low: int, high: int) -> int:
    """An integer (not a bool) in ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"{name} must be an integer, got {type(value).__name__}")
    if not low <= value <= high:
        raise InvalidArgument(f"{name} must be between {low} and {high}, got {quote(value)}")
    return value


def check_seconds(name: str, value: object, high: float) -> float:
    """A finite number of seconds in ``[0, high]``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgument(f"{name} must be a number of seconds, got {type(value).__name__}")
    # Compared before any float conversion: an int such as 10**400 has no float.
    if not 0 <= value <= high or not math.isfinite(value):
        raise InvalidArgument(f"{name} must be between 0 and {high:g} seconds, got {quote(value)}")
    return float(value)
