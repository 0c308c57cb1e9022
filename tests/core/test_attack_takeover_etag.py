"""Attack: the owner honours a takeover request "once per version", but a challenger
whose pause request has reached ``takeover_yield_max`` posts byte-identical requests
(same target epoch, identity, incarnation and hold). On S3 the version token is the
ETag, an MD5 of the content (docs/architecture.md: "S3 ETags are content hashes"), so
every later request has the version already honoured and is ignored: after one capped
pause that was not enough, the owner never pauses again and the challenger gives up."""

from __future__ import annotations

import hashlib

import attrs

from osqueue_core import BrokerConfig
from osqueue_core.markers import TakeoverRequest, encode_takeover_request

from .harness import Harness, SimStore


@attrs.define
class ContentHashStore(SimStore):
    """Versions are MD5s of the content, like S3 ETags."""

    def put(self, key: str, data: bytes) -> int:
        self.counter += 1
        self.objects[key] = (data, hashlib.md5(data).hexdigest())  # type: ignore[assignment]
        return self.objects[key][1]


CONFIG = BrokerConfig(takeover_check=1.0, takeover_yield_max=10)


def test_a_repeated_capped_request_is_honoured_again_on_content_hash_versions() -> None:
    store = ContentHashStore()
    owner = Harness.started(store, identity="owner", config=CONFIG)
    hold = CONFIG.takeover_yield_max
    first, again = (
        TakeoverRequest(1, "challenger", "challenger-1", hold, sequence) for sequence in (1, 2)
    )
    assert encode_takeover_request(first) != encode_takeover_request(again), (
        "a challenger's requests at the cap still differ (their sequence)"
    )

    def busy_second() -> None:
        owner.push()
        owner.push()
        owner.advance(1.0)

    store.put("takeover.json", encode_takeover_request(first))
    busy_second()
    assert owner.broker.stats().yields == 1
    owner.advance(10.0)  # the pause ends; the challenger lost anyway and asks again
    store.put("takeover.json", encode_takeover_request(again))
    busy_second()
    busy_second()
    assert owner.broker.stats().yields == 2, "the challenger's new request was ignored"
