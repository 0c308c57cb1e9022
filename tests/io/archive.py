"""Reading back what a broker archived, for tests that check "archived exactly once"."""

from __future__ import annotations

from typing import Any

import orjson

from osqueue_io.storage import ObjectStore


async def archived_records(store: ObjectStore) -> list[dict[str, Any]]:
    """Every job record in every archive object, with repeats (there must be none)."""
    records: list[dict[str, Any]] = []
    for key in await store.list("archive"):
        found = await store.read(key)
        assert found is not None
        records.extend(orjson.loads(found.data)["jobs"])
    return records


async def archived_ids(store: ObjectStore) -> list[str]:
    return [record["id"] for record in await archived_records(store)]
