"""What a group member's dashboard says about a queue it does not serve, in process: a
queue outside the group is 404 and one another member serves is 409 naming that member,
and neither message repeats more than a short, quoted part of what it was given or of
what the bucket holds."""

from __future__ import annotations

from urllib.parse import quote as quote_url

import pytest
from aiohttp.test_utils import make_mocked_request

from osqueue_core import SCHEMA_VERSION, BrokerConfig, Owner, StateHeader, encode_state
from osqueue_io.group.layout import state_key
from osqueue_io.http.dashboard import Dashboard
from osqueue_io.http.group_monitor import GroupMonitor
from osqueue_io.http.params import BadRequest
from osqueue_io.storage import open_store

pytestmark = pytest.mark.anyio

QUEUES = ("q1", "q2")
#: The longest queue part a job id may carry: never checked as a queue name.
UNCHECKED_QUEUE = "<" + "z" * 250
LONG = "x" * 5000
#: A message naming a quoted value is this long at most.
SHORT = 400


def _member() -> GroupMonitor:
    config = BrokerConfig(owner_lease=5.0)
    store = open_store("memory://")
    return GroupMonitor(store, config, identity="m1", address=None, queues=QUEUES)


@pytest.mark.parametrize("archive", ["", "&archive=queues/q1/archive/x.json"])
async def test_a_queue_outside_the_group_is_named_short_and_quoted(archive: str) -> None:
    dashboard = Dashboard(_member())
    request = make_mocked_request("GET", f"/job?id={quote_url(UNCHECKED_QUEUE)}/1{archive}")
    with pytest.raises(BadRequest) as refused:
        await dashboard.job(request)
    assert refused.value.status == 404
    assert len(refused.value.message) < SHORT
    assert "queue '<zzz" in refused.value.message


async def test_the_owner_named_by_the_bucket_is_short_and_quoted() -> None:
    member = _member()
    owner = Owner(identity="m2 " + LONG, incarnation="i", epoch=1, address="h:1 " + LONG)
    header = StateHeader(schema_version=SCHEMA_VERSION, revision=1, owner=owner, next_seq=0)
    await member.store.create(state_key("q1"), encode_state(header, []))
    with pytest.raises(BadRequest) as refused:
        await member.runtime_for("q1")
    assert refused.value.status == 409
    message = refused.value.message
    assert "member 'm2 xxx" in message
    assert "(gRPC at 'h:1 xxx" in message
    assert len(message) < 2 * SHORT
