"""Version tokens and stored objects: what a read returns and a conditional write expects."""

from __future__ import annotations

import attrs


@attrs.frozen
class ObjectVersion:
    """Identifies one stored version of an object, as the backend reported it.

    Pass it back unchanged to :meth:`ObjectStore.update`. Backends use different parts:
    S3 and Azure compare ``e_tag``; GCS compares ``version`` (the object's generation);
    the local-filesystem backend puts its own token in ``e_tag``. Both are kept because
    a version is only meaningful to the backend that produced it.

    S3's ETag is a content hash: writing the same bytes again gives the same ETag back
    (A -> B -> A). Callers that must tell such writes apart keep a revision in the data.
    """

    e_tag: str | None
    version: str | None

    def __str__(self) -> str:
        parts = [f"{name}={value}" for name, value in attrs.asdict(self).items() if value]
        return ", ".join(parts) or "<no version>"


@attrs.frozen
class StoredObject:
    """An object's bytes together with the version they were read at."""

    data: bytes
    version: ObjectVersion
