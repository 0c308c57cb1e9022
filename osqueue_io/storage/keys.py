"""The one key syntax every backend accepts, and the check that enforces it.

Object stores accept almost any string as a key, a filesystem does not; the local
backend must also never be talked into writing outside its root. Checking the same
rule everywhere keeps keys portable: state written on S3 can be copied to a directory.
"""

from __future__ import annotations

from osqueue_io.storage.errors import InvalidKey

#: Segments starting with this belong to the local backend's lock and temp files.
RESERVED_SEGMENT_PREFIX = ".osq-"

#: S3's limit, the tightest of the supported backends.
MAX_KEY_BYTES = 1024


def check_key(key: str) -> str:
    """Return ``key`` unchanged if it is a valid object key, else raise :class:`InvalidKey`."""
    if not key:
        raise InvalidKey(key, "the key is empty")
    if key.startswith("/"):
        raise InvalidKey(key, "keys are relative: remove the leading '/'")
    if len(key.encode("utf-8", errors="surrogatepass")) > MAX_KEY_BYTES:
        raise InvalidKey(key, f"longer than {MAX_KEY_BYTES} bytes")
    if "\\" in key:
        raise InvalidKey(key, "backslashes are not allowed; separate segments with '/'")
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in key):
        raise InvalidKey(key, "control characters are not allowed")
    for segment in key.split("/"):
        if not segment:
            raise InvalidKey(key, "empty segment ('//' or a trailing '/')")
        if segment in (".", ".."):
            raise InvalidKey(key, f"the segment {segment!r} is not allowed")
        if segment.startswith(RESERVED_SEGMENT_PREFIX):
            raise InvalidKey(
                key, f"segments starting with {RESERVED_SEGMENT_PREFIX!r} are reserved"
            )
    return key


def check_prefix(prefix: str) -> str:
    """Normalise a listing prefix: ``""`` lists everything, a trailing ``/`` is optional.

    Prefixes match whole segments: ``"archive"`` lists ``archive/x`` but not
    ``archive-old/x`` nor the key ``archive`` itself. Returns the prefix without its
    trailing ``/``.
    """
    stripped = prefix[:-1] if prefix.endswith("/") else prefix
    if not stripped:
        if prefix:
            raise InvalidKey(prefix, "a prefix of only '/' is not allowed; use ''")
        return ""
    return check_key(stripped)


def join_key(prefix: str, key: str) -> str:
    """Join a store prefix (already checked, no trailing ``/``) and a key."""
    return f"{prefix}/{key}" if prefix else key
