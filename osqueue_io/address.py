"""``host:port`` strings, as the server's ``--listen`` and the worker's address use them."""

from __future__ import annotations

import re

_HOST_PORT = re.compile(r"(\[[^\]]*\]|[^:\[\]]*):(\d{1,5})")


def split_host_port(text: str) -> tuple[str, int] | None:
    """``host:port`` (``[v6]:port`` for IPv6 literals) -> (host, port); the host may be
    empty. None if ``text`` is not of that form or the port is over 65535."""
    match = _HOST_PORT.fullmatch(text.strip())
    if match is None or int(match.group(2)) > 65535:
        return None
    return match.group(1).strip("[]"), int(match.group(2))
