"""The small objects beside the state: epoch markers and takeover requests.

* An **epoch marker** (``<epoch_prefix><epoch:020d>``) is created, create-only, by the
  broker that is about to take the state over with that epoch. Epochs therefore never
  repeat, even when the state object is restored from an old backup or deleted and
  recreated: job ids and archive keys, which contain the epoch, stay unique. A marker
  holds its creator (``identity``, ``incarnation``), so a creator whose create had an
  unknown outcome can recognise its own marker.
* The **takeover request** (``takeover_request_key``) is how a broker that keeps losing
  its takeover write to a busy owner asks that owner to pause its writes for ``hold``
  seconds. An owner honours a request that names its own epoch, once per version of the
  object; anything else (an older epoch, garbage) is ignored.
"""

from __future__ import annotations

import math

import attrs
import orjson

from osqueue_core.limits import MAX_COUNTER

#: Epochs are zero-padded to this many digits in marker keys, so keys sort by epoch.
EPOCH_DIGITS = 20


def marker_key(prefix: str, epoch: int) -> str:
    """The key of the marker that reserves ``epoch``."""
    return f"{prefix}{epoch:0{EPOCH_DIGITS}d}"


def marker_epoch(prefix: str, key: str) -> int | None:
    """The epoch a marker key reserves, or None for a key that is not a marker (or
    names an epoch no broker can reach)."""
    name = key[len(prefix) :] if key.startswith(prefix) else ""
    if len(name) != EPOCH_DIGITS or not name.isascii() or not name.isdigit():
        return None
    epoch = int(name)
    return epoch if 0 < epoch < MAX_COUNTER else None


def encode_marker(epoch: int, identity: str, incarnation: str) -> bytes:
    return orjson.dumps(
        {"schema_version": 1, "epoch": epoch, "identity": identity, "incarnation": incarnation}
    )


@attrs.frozen
class TakeoverRequest:
    """A challenger's request that the owner of ``target_epoch`` pause for ``hold`` s.

    ``sequence`` counts the challenger's requests: no two have the same bytes, so each
    gets a new version even where versions are content hashes (S3 ETags), and the owner,
    which honours each version once, honours each request.
    """

    target_epoch: int
    identity: str
    incarnation: str
    hold: float
    sequence: int = 0


def encode_takeover_request(request: TakeoverRequest) -> bytes:
    return orjson.dumps({"schema_version": 1, **attrs.asdict(request)})


def decode_takeover_request(data: bytes) -> TakeoverRequest | None:
    """The request in ``data``, or None if it is not one (never raises)."""
    try:
        raw = orjson.loads(data)
        request = TakeoverRequest(
            target_epoch=raw["target_epoch"],
            identity=raw["identity"],
            incarnation=raw["incarnation"],
            hold=raw["hold"],
            sequence=raw.get("sequence", 0),
        )
    except (orjson.JSONDecodeError, TypeError, KeyError, AttributeError):
        return None
    valid = (
        type(request.target_epoch) is int
        and isinstance(request.identity, str)
        and isinstance(request.incarnation, str)
        and type(request.hold) in (int, float)
        and math.isfinite(request.hold)
        and request.hold > 0
        and type(request.sequence) is int
    )
    return request if valid else None
