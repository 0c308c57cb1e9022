"""A scale-out group with TLS and bearer tokens, and its clients with and without them.

Three member processes (``group``) serve six queues 2/2/2, each member with the same
certificate (made for ``127.0.0.1``, the address every member advertises in the bucket)
and token file; one of them also serves its dashboard and metrics. The group client
finds each queue's owner in the bucket and dials it with the CA and the token.
Leases are long (no lease runs out, so no state changes by itself during a test): each
refusal test records every queue's state object first and checks none of them moved.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import attrs
import pytest

from osqueue_core import (
    BrokerNotRunning,
    InvalidArgument,
    JobNotFound,
    LeaseLost,
    NewJob,
    OsqueueError,
    PermissionDenied,
    Unauthenticated,
)
from osqueue_io.remote import Worker
from osqueue_io.security import client_context
from osqueue_io.storage import open_store
from osqueue_io.sync import RemoteQueue as BlockingRemoteQueue
from tests.io.distributed.conftest import ChildProcess
from tests.io.distributed.test_group import LONG_LEASE, QUEUES, balanced, start
from tests.io.http.conftest import http_urls
from tests.io.security.certs import Certificates, make_certificates
from tests.io.security.test_broker_security import (  # a token of each role, one unknown
    ADMIN,
    BOUND,
    READ,
    WORKER,
    WRONG,
    Call,
    every_call,
)

pytestmark = pytest.mark.anyio


@attrs.frozen
class Group:
    """The running group: its data URL, its CA, each queue's owner, and the member that
    serves HTTP."""

    data: str
    certificates: Certificates
    owners: dict[str, str | None]
    web: ChildProcess
    members: dict[str, ChildProcess]

    def one_queue_per_member(self) -> list[str]:
        """A queue of each member (so every member is asked)."""
        found: dict[str | None, str] = {}
        for queue, owner in self.owners.items():
            found.setdefault(owner, queue)
        assert len(found) == 3, self.owners
        return sorted(found.values())


@pytest.fixture(scope="module")
def group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Group]:
    directory = tmp_path_factory.mktemp("secured-group")
    certificates = make_certificates(directory)
    token_file = directory / "tokens"
    token_file.write_text(f"read:{READ}\nworker:{WORKER}\nadmin:{ADMIN}\nworker:{BOUND}:build-\n")
    token_file.chmod(0o600)
    security = (
        *("--tls-cert", str(certificates.cert), "--tls-key", str(certificates.key)),
        *("--token-file", str(token_file)),
        # No job lease runs out (and changes a state) during a test.
        *("--heartbeat-timeout", "1h"),
    )
    data = str(directory / "group")
    members: dict[str, ChildProcess] = {}
    try:
        web = start(
            members,
            data,
            "m1",
            LONG_LEASE,
            (*security, "--http-listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"),
        )
        for name in ("m2", "m3"):
            start(members, data, name, LONG_LEASE, security)
        owners = anyio.run(balanced, data, [2, 2, 2], 30.0)
        yield Group(data, certificates, owners, web, members)
    finally:
        for child in members.values():
            child.kill()


def client(group: Group, token: str | None, **options: Any) -> Worker:
    """A group client with the CA (unless ``options`` say otherwise) and ``token``."""
    if "ssl_context" not in options:
        options.setdefault("tls_ca", group.certificates.ca)
    options.setdefault("failover_timeout", 10)  # a broken setup fails soon, not in 60 s
    return Worker(None, storage=group.data, group=QUEUES, token=token, timeout=5, **options)


async def states(group: Group) -> dict[str, bytes]:
    """Every queue's state object, as stored."""
    store = open_store(group.data)
    found: dict[str, bytes] = {}
    try:
        for queue in QUEUES:
            stored = await store.read(f"queues/{queue}/state.json")
            assert stored is not None
            found[queue] = stored.data
    finally:
        await store.aclose()
    return found


async def settled(group: Group) -> dict[str, bytes]:
    """Every queue's state once no completed job waits to be archived (archiving
    writes the state: not what a refusal test should see)."""
    async with client(group, ADMIN) as admin:
        deadline = time.monotonic() + 20
        while (await admin.stats()).completed_pending_archive:
            assert time.monotonic() < deadline, "completed jobs were never archived"
            await anyio.sleep(0.05)  # polling the owners, who archive in the background
    return await states(group)


@attrs.frozen
class Scene:
    """A job claimed by ``w-1`` and a dead letter in ``queue``, and a call of every RPC
    about them."""

    queue: str
    job_id: str
    dead_id: str

    def calls(self) -> dict[str, Call]:
        """The single broker's calls (by id), those naming a queue naming this one."""
        queue = self.queue
        return {
            **every_call(self.job_id, self.dead_id),
            "Push": lambda w: w.push(b"x", queue=queue),
            "PushBatch": lambda w: w.push_batch([NewJob(b"x", queue), NewJob(b"y", queue)]),
            "Claim": lambda w: w.claim(queues=[queue]),
            "ClaimBatch": lambda w: w.claim_many(2, queues=[queue]),
            "ListDead": lambda w: w.dead_letters(queue=queue),
        }


async def scenes(group: Group) -> list[Scene]:
    """A :class:`Scene` on a queue of each member (pushed and claimed with the worker
    token)."""
    made = []
    async with client(group, WORKER, worker_id="w-1") as worker:
        for queue in group.one_queue_per_member():
            job_id = await worker.push(b"held", queue=queue)
            job = await worker.claim(queues=[queue])
            assert job is not None
            assert job.id == job_id
            dead_id = await worker.push(b"dies", queue=queue)
            dying = await worker.claim(queues=[queue])
            assert dying is not None
            assert dying.id == dead_id
            assert await worker.fail(dead_id, "boom", requeue=False)
            made.append(Scene(queue, job_id, dead_id))
    return made


# -- TLS --------------------------------------------------------------------------------


async def test_a_client_with_the_ca_and_a_worker_token_works_every_queue(group: Group) -> None:
    async with client(group, WORKER, worker_id="w-ok") as worker:
        for queue in QUEUES:
            job_id = await worker.push(f"to {queue}".encode(), queue=queue)
            job = await worker.claim(queues=[queue])
            assert job is not None
            assert (job.id, job.data) == (job_id, f"to {queue}".encode())
            await worker.complete(job.id)
        # A claim spanning every member (the client asks each owner for its queues).
        pushed = {await worker.push(b"anywhere", queue=queue) for queue in QUEUES}
        claimed: set[str] = set()
        deadline = time.monotonic() + 30
        while claimed != pushed:
            assert time.monotonic() < deadline, f"claimed {claimed} of {pushed}"
            for job in await worker.claim_many(len(QUEUES), queues=QUEUES, wait=1):
                claimed.add(job.id)
                await worker.complete(job.id)
    # An ssl.SSLContext works as well as a CA file; a read token reads every owner.
    context = client_context(group.certificates.ca)
    async with client(group, READ, ssl_context=context) as reader:
        stats = await reader.stats()
    assert sorted(stats.identity.split(",")) == ["m1", "m2", "m3"]
    assert len(stats.address.split(",")) == 3


def test_the_blocking_group_client_takes_the_ca_and_the_token(group: Group) -> None:
    """``osqueue_io.sync.RemoteQueue`` with ``group=``: the same arguments, on every
    queue; and refused without the token, with nothing pushed."""
    options: dict[str, Any] = {
        "storage": group.data,
        "group": QUEUES,
        "tls_ca": group.certificates.ca,
        "timeout": 5,
        "failover_timeout": 10,
    }
    with BlockingRemoteQueue(None, bytes, token=WORKER, worker_id="w-sync", **options) as queue:
        for name in QUEUES:
            job_id = queue.push(f"sync {name}".encode(), queue=name)
            job = queue.claim(queues=[name])
            assert job is not None
            assert (job.id, job.item) == (job_id, f"sync {name}".encode())
            queue.complete(job)
    before = anyio.run(settled, group)
    with (
        BlockingRemoteQueue(None, bytes, **options) as anonymous,
        pytest.raises(Unauthenticated),
    ):
        anonymous.push(b"no token", queue=QUEUES[0])
    assert anyio.run(states, group) == before


async def test_a_client_without_the_ca_fails_clearly(group: Group, tmp_path: Path) -> None:
    stranger = make_certificates(tmp_path, prefix="stranger-")
    for options in (
        {"tls_ca": stranger.ca},  # a CA that did not sign the members' certificate
        {"ssl_context": client_context()},  # the system's roots
    ):
        async with client(group, WORKER, **options) as worker:
            with pytest.raises(OsqueueError) as failed:
                await worker.push(b"x", queue=QUEUES[0])
        assert type(failed.value) is OsqueueError, "a configuration error, not retryable"
        assert not failed.value.retryable
        assert "TLS with the broker" in str(failed.value)
        assert "CERTIFICATE_VERIFY_FAILED" in str(failed.value)
    # Plaintext to a TLS member: it hangs up; after following the owner for a while,
    # the client says what may be wrong.
    async with Worker(
        None, storage=group.data, group=QUEUES, token=WORKER, timeout=2, failover_timeout=1
    ) as plain:
        with pytest.raises(BrokerNotRunning, match="tls_ca="):
            await plain.push(b"x", queue=QUEUES[0])


def test_the_group_client_refuses_what_it_could_not_send(tmp_path: Path) -> None:
    for token in ("", "with space", "x" * 300):
        with pytest.raises(InvalidArgument, match="a token is"):
            Worker(None, storage=str(tmp_path), group=QUEUES, token=token)
    with pytest.raises(InvalidArgument, match="cannot read the CA bundle"):
        Worker(None, storage=str(tmp_path), group=QUEUES, tls_ca=tmp_path / "missing.pem")


# -- tokens -----------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, WRONG], ids=["no token", "a wrong token"])
async def test_missing_and_wrong_tokens_are_unauthenticated_and_nothing_changes(
    group: Group, token: str | None
) -> None:
    made = await scenes(group)
    before = await settled(group)
    async with client(group, token, worker_id="w-1") as stranger:
        for scene in made:
            for name, call in scene.calls().items():
                with pytest.raises(Unauthenticated) as refused:
                    await call(stranger)
                assert "needs a bearer token" in str(refused.value), (scene.queue, name)
                assert not refused.value.retryable
    assert await states(group) == before, "a refused call changed a queue's state"
    async with client(group, ADMIN) as admin:
        for scene in made:
            info = await admin.get(scene.job_id)
            assert (info.status, info.holder) == ("claimed", "w-1")


async def test_a_read_token_reads_and_cannot_push_or_change_anything(group: Group) -> None:
    made = await scenes(group)
    before = await settled(group)
    async with client(group, READ, worker_id="w-1") as reader:
        for scene in made:
            assert (await reader.get(scene.job_id)).status == "claimed"
            dead = await reader.dead_letters(queue=scene.queue)
            assert scene.dead_id in [job.id for job in dead.jobs]
            calls = scene.calls()
            await calls["Stats"](reader)
            for name in sorted(set(calls) - {"GetJob", "ListDead", "Stats"}):
                with pytest.raises(PermissionDenied) as refused:
                    await calls[name](reader)
                assert "role" in str(refused.value), (scene.queue, name)
    assert await states(group) == before


async def test_a_bound_worker_token_touches_only_the_jobs_its_workers_hold(
    group: Group,
) -> None:
    queues = group.one_queue_per_member()
    held: dict[str, str] = {}
    async with client(group, BOUND, worker_id="build-7") as bound:
        for queue in queues:
            job_id = await bound.push(b"for builders", queue=queue)
            job = await bound.claim(queues=[queue])
            assert job is not None
            assert job.id == job_id
            held[queue] = job_id
        before = await states(group)
        connection = bound.connection
        for queue, job_id in held.items():
            # A worker id outside the token's prefix: refused before any broker sees it.
            for call in (
                partial(connection.claim, "intruder", [queue], 0, None),
                partial(connection.heartbeat, job_id, "intruder"),
                partial(connection.complete, job_id, "intruder", None),
                partial(connection.fail, job_id, "intruder", "x", True),
                partial(connection.release, job_id, "intruder"),
                partial(
                    connection.complete_batch,
                    [(job_id, "build-7", None), (job_id + "x", "intruder", None)],
                ),
            ):
                with pytest.raises(PermissionDenied, match="worker ids starting with 'build-'"):
                    await call()
            # Within the prefix, but not the holder: the queue's broker refuses it.
            for call in (
                partial(connection.heartbeat, job_id, "build-8"),
                partial(connection.complete, job_id, "build-8", None),
                partial(connection.fail, job_id, "build-8", "x", True),
                partial(connection.release, job_id, "build-8"),
            ):
                with pytest.raises(LeaseLost):
                    await call()
        assert await states(group) == before, "a refused call changed a queue's state"
        for job_id in held.values():
            await bound.complete(job_id)
    async with client(group, ADMIN) as admin:
        for job_id in held.values():
            try:
                info = await admin.get(job_id)
            except JobNotFound:
                continue  # finished, and archived already
            assert info.status == "completed"


# -- HTTP -------------------------------------------------------------------------------


def status(url: str, context: Any, token: str | None = None) -> int:
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def test_metrics_and_dashboard_over_https_need_the_read_token(group: Group) -> None:
    dashboard, metrics = http_urls(group.web)
    context = client_context(group.certificates.ca, alpn=None)
    for url in (metrics + "/metrics", dashboard + "/", dashboard + "/group"):
        assert url.startswith("https://127.0.0.1:")
        assert status(url, context) == 401
        assert status(url, context, WRONG) == 401
        assert status(url, context, READ) == 200
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        status(metrics + "/metrics", client_context(), READ)


async def test_no_token_is_ever_logged(group: Group) -> None:
    """Every token, right and wrong, sent here to every member (on calls allowed and
    refused, and to the dashboard and metrics, so the test needs no other test to have
    run first: under pytest-xdist a worker may run it alone); none of them is in a
    member's log."""
    for token in (READ, WORKER, ADMIN, BOUND):
        async with client(group, token, worker_id="build-1") as worker:
            stats = await worker.stats()  # asks every member
        assert sorted(stats.identity.split(",")) == ["m1", "m2", "m3"]
    async with client(group, READ) as reader:
        for queue in group.one_queue_per_member():
            with pytest.raises(PermissionDenied):
                await reader.push(b"x", queue=queue)
    for token in (WRONG, None):
        async with client(group, token) as stranger:
            for queue in group.one_queue_per_member():
                with pytest.raises(Unauthenticated):
                    await stranger.push(b"x", queue=queue)
    dashboard, metrics = http_urls(group.web)
    context = client_context(group.certificates.ca, alpn=None)
    for token in (READ, WORKER, ADMIN, BOUND, WRONG, None):
        for url in (metrics + "/metrics", dashboard + "/"):
            await anyio.to_thread.run_sync(status, url, context, token)

    def collected() -> str:
        for member in group.members.values():
            member.collect()
        return "".join(member.text for member in group.members.values())

    # A member logs a refusal before it answers; the lines reach us on a thread.
    deadline = time.monotonic() + 10
    logs = collected()
    while "refused" not in logs and time.monotonic() < deadline:
        await anyio.sleep(0.05)
        logs = collected()
    assert "refused" in logs, "the refusals were logged"
    for token in (READ, WORKER, ADMIN, BOUND, WRONG):
        assert token not in logs


# -- the advertised name ----------------------------------------------------------------


async def test_a_members_certificate_must_name_the_address_it_advertises(
    tmp_path: Path,
) -> None:
    # A member advertising 127.0.0.1 (its listening address) with a certificate for
    # another name: clients dial what the bucket says, and refuse the certificate.
    elsewhere = make_certificates(tmp_path, names=("member.example",), prefix="named-")
    data = str(tmp_path / "group")
    members: dict[str, ChildProcess] = {}
    try:
        tls = ("--tls-cert", str(elsewhere.cert), "--tls-key", str(elsewhere.key))
        start(members, data, "m1", LONG_LEASE, tls)
        await balanced(data, [len(QUEUES)], 30)
        async with Worker(
            None, storage=data, group=QUEUES, tls_ca=elsewhere.ca, timeout=5
        ) as worker:
            with pytest.raises(OsqueueError) as failed:
                await worker.push(b"x", queue=QUEUES[0])
        assert not failed.value.retryable
        assert "TLS with the broker at 127.0.0.1:" in str(failed.value)
        assert "CERTIFICATE_VERIFY_FAILED" in str(failed.value)
    finally:
        for child in members.values():
            child.kill()
