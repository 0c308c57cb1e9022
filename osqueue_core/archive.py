"""Archive keys: where finished jobs go, bucketed by the UTC time they finished.

A key names the bucket and the state write that committed the jobs, e.g.
``archive/2026-11-27T17/000003-0000000042.json`` for epoch 3, revision 42. Keys are
deterministic, so a broker that crashed after writing an archive object and before
dropping its jobs from the state writes the same key again, finds it there, and does
not duplicate it.
"""

from __future__ import annotations

import functools
import re
from datetime import UTC, datetime

_EPOCH_AND_REVISION = re.compile(r"/([0-9]+)-([0-9]+)\.json$")


@functools.lru_cache(maxsize=64)
def archive_bucket(finished_at: float, bucket_format: str) -> str:
    """The time bucket (``strftime`` of the UTC time) a job finished at. (Cached: the
    jobs finished by one input share its wall time.)"""
    return datetime.fromtimestamp(finished_at, UTC).strftime(bucket_format)


def archive_key(prefix: str, bucket: str, epoch: int, revision: int) -> str:
    """The archive object for the jobs of ``bucket`` committed by state ``revision``."""
    return f"{prefix}{bucket}/{epoch:06d}-{revision:010d}.json"


def archive_key_epoch(key: str) -> int | None:
    """The epoch an archive key names (None for a key osqueue did not make)."""
    found = _EPOCH_AND_REVISION.search(key)
    if found is None or len(found.group(1)) > 15:  # beyond any reachable epoch
        return None
    return int(found.group(1))
