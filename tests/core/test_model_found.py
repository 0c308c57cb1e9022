"""Examples the model test (tests/core/test_model.py) failed on where the model was
wrong, not the core, kept as regression tests of the model.

The first: a fenced broker's segment create conflicted (a foreign object planted under
its key), its read back failed, its successor's orphan sweep deleted the foreign object,
the fenced broker read the key back empty and created it again, then deleted what it
had created (never attached). The model took that for deleting the foreign object
under its own abandoned key: it kept the key as foreign after the foreign object was
gone. (Found by a derandomized run drawing other examples; reduced by hand to the
steps hypothesis printed.)
"""

from __future__ import annotations

import pytest

from . import model_reference, model_segments, test_model
from .test_model_mutants import SpillingModel


@pytest.fixture(autouse=True)
def _no_events(monkeypatch: pytest.MonkeyPatch) -> None:
    """The model notes hypothesis events, which only a hypothesis test can: the steps
    here run outside one."""
    for module in (test_model, model_segments, model_reference):
        if hasattr(module, "event"):
            monkeypatch.setattr(module, "event", lambda *args, **kwargs: None)


def test_a_fenced_broker_may_delete_what_it_created_again_under_a_swept_key() -> None:
    state = SpillingModel()
    state.first_broker(linger=0.3, hold_segments=True, lease=6.0, segments={"spill_jobs": None})
    state.deliver(outcome="ok", pick=47, slot=0)
    state.start_broker(standby=False)
    state.claim_many(count=2, queues=("default", "mail"), settle=True, slot=1, wait=0, worker="w1")
    state.deliver(outcome="failed", pick=88, slot=1)
    state.purge(dead_only=True, picks=[100, 174], queue="default", settle=True, slot=1)
    state.purge(dead_only=True, picks=[444, 511], queue="default", settle=False, slot=0)
    state.step_wall_clock(step=86400.0)
    state.push_batch(items=[], same_key=True, settle=True, slot=1)
    state.claim(queues=("default",), settle=True, slot=1, wait=0, worker="w3")
    state.push_with_options(
        data=b"", options=("mail", -1, (None, None), None, 1), settle=True, slot=1
    )
    state.claim_many(count=2, queues=("default", "mail"), settle=True, slot=0, wait=0, worker="w1")
    state.step_wall_clock(step=1.0)
    state.push_with_options(
        data=b"", options=("mail", 1, (15.0, None), None, None), settle=False, slot=0
    )
    state.claim(queues=("default",), settle=True, slot=1, wait=0, worker="w1")
    state.push(data=b"k\xf2\xd9\xdf", settle=False, slot=0)
    state.push(data=b"\xed", settle=True, slot=1)
    state.push_with_options(
        data=b"\x82C", options=("default", -1, (None, None), None, None), settle=True, slot=1
    )
    state.push_with_options(
        data=b"D\xf5", options=("default", 0, (None, None), "k3", None), settle=False, slot=1
    )
    state.step_wall_clock(step=-86400.0)
    state.deliver(outcome="conflict", pick=89, slot=1)
    state.push_batch(items=[], same_key=True, settle=False, slot=1)
    state.claim_many(count=3, queues=("default",), settle=True, slot=0, wait=3, worker="w3")
    state.deliver(outcome="failed", pick=97, slot=1)
    state.push(data=b"", settle=False, slot=1)
    state.step_wall_clock(step=-86400.0)
    state.claim(queues=("mail",), settle=True, slot=0, wait=3, worker="w3")
    state.deliver(outcome="ok", pick=65, slot=0)
    state.push_batch(items=[], same_key=False, settle=False, slot=1)
    state.push(data=b"", settle=True, slot=1)
    state.claim_many(count=2, queues=("default", "mail"), settle=True, slot=0, wait=0, worker="w2")
    state.push_batch(items=[], same_key=False, settle=False, slot=0)
    state.push(data=b"hi\x0e\xcb", settle=True, slot=1)
    state.claim_many(count=2, queues=("default", "mail"), settle=False, slot=0, wait=0, worker="w2")
    state.push_with_options(
        data=b"", options=("video", 2, (15.0, None), None, None), settle=False, slot=0
    )
    state.push_batch(
        items=[(b"\x03", ("default", 2, (None, 7.0), None, 5))], same_key=True, settle=True, slot=0
    )
    state.push(data=b"\x0e?", settle=True, slot=1)
    state.step_wall_clock(step=-3600.0)
    state.push(data=b"]n", settle=False, slot=1)
    state.push_with_options(
        data=b"\xd3\xf3", options=("mail", -1, (2.0, None), None, None), settle=True, slot=1
    )
    state.push(data=b"I\x82\xec|", settle=True, slot=0)
    state.push_batch(items=[], same_key=True, settle=True, slot=1)
    state.claim(queues=("default",), settle=False, slot=0, wait=0, worker="w3")
    state.claim(queues=("mail",), settle=False, slot=0, wait=0, worker="w3")
    state.claim_many(count=2, queues=("mail",), settle=True, slot=0, wait=3, worker="w3")
    state.purge(dead_only=True, picks=[125, 140], queue=None, settle=True, slot=0)
    state.step_wall_clock(step=-86400.0)
    state.push_batch(items=[], same_key=False, settle=False, slot=0)
    state.claim_many(count=3, queues=("video",), settle=True, slot=1, wait=3, worker="w2")
    state.claim_many(count=2, queues=("video",), settle=True, slot=0, wait=3, worker="w1")
    state.purge(dead_only=True, picks=[803, 15], queue=None, settle=True, slot=1)
    state.push(data=b"\x98", settle=True, slot=0)
    state.push(data=b"Z\xe2", settle=False, slot=1)
    state.push_with_options(
        data=b"\xfd", options=("video", -1, (0.0, None), "k3", 1), settle=True, slot=1
    )
    state.give_up(pick=76, settle=False, slot=0)
    state.heartbeat(honest=True, pick=3, settle=True, slot=1)
    state.fail(pick=9, settle=False, slot=1)
    state.fail(pick=57, settle=True, slot=0)
    state.claim_many(count=2, queues=("default", "mail"), settle=False, slot=1, wait=0, worker="w3")
    state.release(pick=23, settle=True, slot=1)
    state.heartbeat(honest=False, pick=55, settle=True, slot=1)
    state.push_batch(items=[], same_key=False, settle=True, slot=1)
    state.claim_many(count=3, queues=("default",), settle=False, slot=0, wait=3, worker="w1")
    state.purge(dead_only=True, picks=[83], queue=None, settle=False, slot=0)
    state.push(data=b"\xba\xa4", settle=True, slot=1)
    state.push(data=b"\xc8-i\xb9", settle=True, slot=1)
    state.claim_many(count=2, queues=("mail", "video"), settle=True, slot=1, wait=3, worker="w2")
    state.fail(pick=21, settle=True, slot=0)
    state.step_wall_clock(step=-1.0)
    state.step_wall_clock(step=3600.0)
    state.give_up(pick=65, settle=True, slot=0)
    state.heartbeat(honest=True, pick=100, settle=True, slot=1)
    state.step_wall_clock(step=3600.0)
    state.heartbeat(honest=False, pick=82, settle=True, slot=0)
    state.fail(pick=17, settle=False, slot=1)
    state.release(pick=67, settle=False, slot=0)
    state.step_wall_clock(step=86400.0)
    state.claim(queues=("default",), settle=True, slot=0, wait=0, worker="w3")
    state.give_up(pick=81, settle=True, slot=1)
    state.step_wall_clock(step=1.0)
    swept = "segments/000001-0000000001.json"
    assert swept in state.store.foreign  # the create conflicted: a foreign object there
    state.teardown()  # settles every broker; the model's checks run on each effect
    assert swept in state.store.deleted
    assert swept not in state.store.foreign
