"""Attack: foreign objects under ``epochs/`` whose names parse as huge epochs. Marker
keys are read back with exactly 20 digits, but the epoch written after the highest one
is not bounded: the next reservation either cannot be encoded (orjson refuses integers
beyond 64 bits, and that error escapes ``receive``), or gets a 21-digit key that no
listing ever recognises as a marker again."""

from __future__ import annotations

import pytest

from osqueue_core import Broker, OsqueueError, Phase

from .harness import Harness, SimStore


def restored_store(foreign_marker: str) -> SimStore:
    store = SimStore()
    Harness.started(store, identity="a")  # epoch 1
    Harness.started(store, identity="b")  # epoch 2 (marker 2 exists)
    backup_epoch_1 = Harness.started(SimStore(), identity="x").store.get("state.json")
    store.put("state.json", backup_epoch_1)  # type: ignore[arg-type]  # restored: epoch 1
    store.put(foreign_marker, b"not a marker")
    return store


def start(store: SimStore) -> Harness:
    h = Harness(Broker(None, identity="c", incarnation="c-1"), store)
    h.broker.start(h.now)
    h.flush()
    return h


def test_a_foreign_marker_beyond_64_bits_fails_the_broker_with_a_typed_error() -> None:
    # Reserving epoch 2 conflicts (b's marker), so the markers are listed: the highest
    # "epoch" is a foreign object's name.
    store = restored_store("epochs/" + "9" * 20)
    try:
        h = start(store)
    except OsqueueError:
        return
    except Exception as exc:
        pytest.fail(f"{type(exc).__name__}: {exc} escaped Broker.receive during takeover")
    assert h.broker.phase in (Phase.RUNNING, Phase.FAILED)


def test_a_state_at_the_64_bit_limit_is_refused_with_a_typed_error() -> None:
    """A state whose revision (or epoch, or next_seq) is the largest integer orjson
    reads parses fine, but revision + 1 cannot be written: the encode error escapes."""
    from osqueue_core import Owner, StateHeader, encode_state

    store = SimStore()
    header = StateHeader(1, 2**64 - 1, Owner("old", "old-1", 1), 0)
    store.put("state.json", encode_state(header, []))
    store.put("epochs/" + "0" * 19 + "1", b"{}")
    try:
        h = start(store)
    except OsqueueError:
        return
    except Exception as exc:
        pytest.fail(f"{type(exc).__name__}: {exc} escaped Broker.receive during takeover")
    assert h.broker.phase is Phase.FAILED


def test_a_stored_job_id_equal_to_a_future_id_does_not_apply_a_batch_in_part() -> None:
    """decode_state checks ids are unique among stored jobs, not that they differ from
    the ids the broker will make: a state whose job already has the id of seq 2 at
    epoch 2 (another job_id_factory, an edited state) makes JobTable.add assert in the
    middle of a PushBatch, after its first job was added to the head state."""
    from osqueue_core import (
        SCHEMA_VERSION,
        Job,
        JobSpec,
        Owner,
        PushBatch,
        StateHeader,
        encode_job,
        encode_state,
    )

    store = SimStore()
    squatter = Job(id="000000000002-2", seq=0, born=JobSpec(b"old", 1.0))
    header = StateHeader(SCHEMA_VERSION, 3, Owner("old", "old-1", 1), 1)
    store.put("state.json", encode_state(header, [encode_job(squatter)]))
    store.put("epochs/" + "0" * 19 + "1", b"{}")
    h = start(store)
    assert h.broker.phase is Phase.RUNNING
    try:
        h.broker.submit(PushBatch(1, (b"x", b"y")), h.now)
    except OsqueueError:
        pass
    except Exception as exc:
        ids = [job.id for job in h.broker._rules.table]
        pytest.fail(f"{type(exc).__name__} escaped submit(); head jobs now {ids}")


def test_a_damaged_object_at_the_next_marker_does_not_block_every_takeover() -> None:
    """Reserving epoch E+1 conflicts; the marker is read to see whose it is; the store
    reports that object damaged (ObjectCorrupt). The slot turns that into CorruptState
    for *any* read, so the broker fails with "restore it from a backup" about an object
    that is not the state, and so does every later broker: the queue can never be taken
    over until someone deletes the marker. Its content does not matter (only whether it
    is ours): a damaged marker is simply not ours."""
    from osqueue_core import Broker, ObjectCorrupt, ReadObject

    store = SimStore()
    Harness.started(store, identity="a")  # epoch 1
    store.put("epochs/" + "0" * 19 + "2", b"\x00damaged")
    h = Harness(Broker(None, identity="b", incarnation="b-1"), store)
    h.auto = False
    h.broker.start(h.now)
    h.flush()
    for _ in range(20):
        if not h.pending:
            break
        effect = h.pending[0]
        if isinstance(effect, ReadObject) and effect.key.startswith("epochs/"):
            h.pending.pop(0)
            h.broker.receive(ObjectCorrupt(effect.op_id, "not an osqueue object"), h.now)
            h._collect()
        else:
            h.deliver(0)
    assert h.broker.phase is Phase.RUNNING, h.broker.failure
