"""How an error message quotes text it cannot trust: briefly.

An error message never repeats untrusted input (an id, an identity read from storage,
a storage error) whole: it quotes at most :data:`QUOTE_LENGTH` characters of it, so no
reply, gRPC status or log line can be made as large as the input that caused it.
"""

from __future__ import annotations

#: At most this many characters of untrusted text appear in an error message.
QUOTE_LENGTH = 64


def quote(value: object, limit: int = QUOTE_LENGTH) -> str:
    """``repr`` of ``value``, cut to ``limit`` characters with the length of what was cut."""
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]!r}… ({len(value)} characters)"
    try:
        text = repr(value)
    except ValueError:  # an int past Python's 4,300-digit limit on int-to-text
        text = f"<{type(value).__name__} too large to show>"
    if len(text) > limit:
        return f"{text[:limit]}… ({len(text)} characters)"
    return text
