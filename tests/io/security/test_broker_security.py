"""A broker process with TLS and bearer tokens, and clients with and without them.

One broker serves the module (``secured``): TLS with a certificate made for the test,
tokens of every role from a token file. Each refusal test records the state object's
bytes first and checks they did not move: a refused call changes nothing. The owner
lease is off (``--owner-lease 0``) so that an idle broker writes nothing by itself.
"""

from __future__ import annotations

import secrets
import ssl
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import grpc
import pytest

from osqueue_core import (
    BrokerNotRunning,
    OsqueueError,
    PermissionDenied,
    Unauthenticated,
)
from osqueue_io import RemoteQueue
from osqueue_io.remote import Worker
from osqueue_io.security import client_context
from osqueue_io.storage import open_store
from osqueue_io.sync import RemoteQueue as BlockingRemoteQueue
from tests.io.distributed.conftest import BrokerProcess, ChildProcess
from tests.io.distributed.test_wire import original  # noqa: F401 (a fixture)
from tests.io.health import health_status
from tests.io.security.certs import Certificates, make_certificates

pytestmark = pytest.mark.anyio

READ = secrets.token_urlsafe(24)
WORKER = secrets.token_urlsafe(24)
ADMIN = secrets.token_urlsafe(24)
BOUND = secrets.token_urlsafe(24)
#: A token of the right shape that the broker was never given.
WRONG = secrets.token_urlsafe(24)
ALL_TOKENS = (READ, WORKER, ADMIN, BOUND)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def secured(
    tmp_path_factory: pytest.TempPathFactory, certificates: Certificates
) -> Iterator[BrokerProcess]:
    directory = tmp_path_factory.mktemp("secured")
    token_file = directory / "tokens"
    token_file.write_text(
        "# roles: read, worker, admin\n"
        f"read:{READ}\n"
        f"worker:{WORKER}\n"
        f"admin:{ADMIN}\n"
        f"  worker:{BOUND}:build-  \n"
    )
    token_file.chmod(0o600)
    broker = BrokerProcess(
        str(directory / "queue"),
        "--tls-cert",
        str(certificates.cert),
        "--tls-key",
        str(certificates.key),
        "--token-file",
        str(token_file),
        "--owner-lease",
        "0",
        "--heartbeat-timeout",
        "1h",  # no lease runs out (and changes the state) during a test
    )
    yield broker
    broker.kill()


def client(
    broker: BrokerProcess, certificates: Certificates, token: str | None, **options: Any
) -> Worker:
    return Worker(broker.address, tls_ca=certificates.ca, token=token, timeout=5, **options)


async def state_bytes(broker: BrokerProcess) -> bytes:
    store = open_store(broker.data)
    try:
        found = await store.read("state.json")
    finally:
        await store.aclose()
    assert found is not None
    return found.data


async def claimed_job(
    broker: BrokerProcess, certificates: Certificates, *, dead: bool = False
) -> str:
    """A job pushed and claimed by ``w-1`` (with the worker token); ``dead``: then failed
    without retry, a dead letter."""
    async with client(broker, certificates, WORKER, worker_id="w-1") as worker:
        job_id = await worker.push(b"held")
        job = await worker.claim()
        assert job is not None
        assert job.id == job_id
        if dead:
            assert await worker.fail(job_id, "boom", requeue=False)
    return job_id


# -- TLS --------------------------------------------------------------------------------


async def test_a_client_with_the_ca_and_a_token_works(
    secured: BrokerProcess, certificates: Certificates
) -> None:
    async with RemoteQueue(
        secured.address, bytes, tls_ca=certificates.ca, token=WORKER, timeout=5
    ) as queue:
        job_id = await queue.push(b"over tls", queue="secure")
        job = await queue.claim(queues=["secure"])
        assert job is not None
        assert (job.id, job.item) == (job_id, b"over tls")
        await queue.complete(job)
    # An ssl.SSLContext works as well as a CA file, and so does the blocking twin.
    context = client_context(certificates.ca)
    with BlockingRemoteQueue(secured.address, bytes, ssl_context=context, token=READ) as reader:
        assert reader.stats().identity


async def test_without_the_right_ca_the_client_fails_clearly(
    secured: BrokerProcess, certificates: Certificates, tmp_path: Path
) -> None:
    stranger = make_certificates(tmp_path, prefix="stranger-")
    for options in (
        {"tls_ca": stranger.ca},  # a CA that did not sign the broker's certificate
        {"ssl_context": client_context()},  # the system's roots
    ):
        async with Worker(secured.address, token=ADMIN, timeout=5, **options) as worker:
            with pytest.raises(OsqueueError) as failed:
                await worker.stats()
        assert type(failed.value) is OsqueueError, "a configuration error, not retryable"
        assert not failed.value.retryable
        assert "TLS with the broker" in str(failed.value)
        assert "CERTIFICATE_VERIFY_FAILED" in str(failed.value)
    # Plaintext to a TLS broker: the broker hangs up; the client says what may be wrong.
    async with Worker(secured.address, token=ADMIN, timeout=5) as plain:
        with pytest.raises(BrokerNotRunning, match="tls_ca="):
            await plain.stats()


async def test_the_certificate_must_name_the_host_dialled(
    certificates: Certificates, tmp_path: Path, secured: BrokerProcess
) -> None:
    # The broker's certificate names 127.0.0.1 and localhost; dialling it by another
    # name of the same machine fails verification.
    elsewhere = make_certificates(tmp_path, names=("broker.example",), prefix="named-")
    directory = tmp_path / "named"
    broker = BrokerProcess(
        str(directory / "queue"),
        "--tls-cert",
        str(elsewhere.cert),
        "--tls-key",
        str(elsewhere.key),
        "--owner-lease",
        "0",
    )
    try:
        async with Worker(broker.address, tls_ca=elsewhere.ca, timeout=5) as worker:
            with pytest.raises(OsqueueError, match="TLS with the broker"):
                await worker.stats()
    finally:
        broker.kill()


# -- tokens -----------------------------------------------------------------------------


Call = Callable[[Worker], Awaitable[object]]


def every_call(job_id: str, dead_id: str) -> dict[str, Call]:
    """One call of each RPC (by name), about ``job_id`` (claimed by ``w-1``) or the
    dead letter ``dead_id``."""
    return {
        "Push": lambda w: w.push(b"x"),
        "PushBatch": lambda w: w.push_batch([b"x", b"y"]),
        "Claim": lambda w: w.claim(),
        "ClaimBatch": lambda w: w.claim_many(2),
        "Heartbeat": lambda w: w.heartbeat(job_id),
        "Complete": lambda w: w.complete(job_id),
        "CompleteBatch": lambda w: w.connection.complete_batch([(job_id, "w-1", None)]),
        "Fail": lambda w: w.fail(job_id, "x"),
        "Release": lambda w: w.release(job_id),
        "Cancel": lambda w: w.cancel(job_id),
        "GetJob": lambda w: w.get(job_id),
        "ListDead": lambda w: w.dead_letters(),
        "Redrive": lambda w: w.redrive([dead_id]),
        "Purge": lambda w: w.purge([dead_id]),
        "Stats": lambda w: w.stats(),
    }


async def test_every_rpc_is_classified() -> None:
    from osqueue_io._proto.osqueue.v1 import QueueServiceBase
    from osqueue_io.security import RPC_ROLES

    paths = set(QueueServiceBase.__mapping__(QueueServiceBase()).keys())  # type: ignore[abstract]
    assert paths == set(RPC_ROLES)
    assert {path.rsplit("/", 1)[1] for path in paths} == set(every_call("", ""))


@pytest.mark.parametrize("token", [None, WRONG], ids=["no token", "a wrong token"])
async def test_missing_and_wrong_tokens_are_refused_and_nothing_changes(
    secured: BrokerProcess, certificates: Certificates, token: str | None
) -> None:
    job_id, _, before, calls = await scene(secured, certificates)
    async with client(secured, certificates, token, worker_id="w-1") as worker:
        for name, call in calls.items():
            with pytest.raises(Unauthenticated) as refused:
                await call(worker)
            assert "needs a bearer token" in str(refused.value), name
            assert not refused.value.retryable
    assert await state_bytes(secured) == before, "a refused call changed the state"
    async with client(secured, certificates, ADMIN, worker_id="w-1") as admin:
        info = await admin.get(job_id)
        assert (info.status, info.holder) == ("claimed", "w-1")


@pytest.mark.parametrize(
    "metadata",
    [
        (("authorization", "Bearer " + "x" * 300),),
        (("authorization", f"Basic {ADMIN}"),),
        (("authorization", ADMIN),),
        (("authorization", f"Bearer {ADMIN}"), ("authorization", f"Bearer {ADMIN}")),
        (("authorization", f"Bearer {WRONG} {ADMIN}"),),
    ],
    ids=["over-long", "another scheme", "no scheme", "twice", "two tokens"],
)
async def test_malformed_authorization_is_refused(
    secured: BrokerProcess, certificates: Certificates, metadata: tuple[tuple[str, str], ...]
) -> None:
    """What the Python client would never send, sent raw with grpcio."""
    before = await state_bytes(secured)
    credentials = grpc.ssl_channel_credentials(certificates.ca.read_bytes())
    with grpc.secure_channel(secured.address, credentials) as channel:
        push = channel.unary_unary("/osqueue.v1.QueueService/Push")
        with pytest.raises(grpc.RpcError) as refused:
            push(b"\x0a\x01x", metadata=metadata, timeout=5)
        assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
        assert ADMIN not in (refused.value.details() or "")
    assert await state_bytes(secured) == before


async def scene(
    broker: BrokerProcess, certificates: Certificates
) -> tuple[str, str, bytes, dict[str, Call]]:
    """A job claimed by ``w-1``, a dead letter, the state's bytes with them, and a call
    of every RPC about them."""
    job_id = await claimed_job(broker, certificates)
    dead_id = await claimed_job(broker, certificates, dead=True)
    return job_id, dead_id, await state_bytes(broker), every_call(job_id, dead_id)


async def test_a_read_token_reads_and_can_change_nothing(
    secured: BrokerProcess, certificates: Certificates
) -> None:
    job_id, dead_id, before, calls = await scene(secured, certificates)
    async with client(secured, certificates, READ, worker_id="w-1") as reader:
        assert (await reader.get(job_id)).status == "claimed"
        assert dead_id in [job.id for job in (await reader.dead_letters()).jobs]
        await reader.stats()
        for name in sorted(set(calls) - {"GetJob", "ListDead", "Stats"}):
            with pytest.raises(PermissionDenied) as refused:
                await calls[name](reader)
            assert "role" in str(refused.value), name
    assert await state_bytes(secured) == before


async def test_a_worker_token_works_jobs_but_cannot_cancel_redrive_or_purge(
    secured: BrokerProcess, certificates: Certificates
) -> None:
    job_id, dead_id, before, calls = await scene(secured, certificates)
    async with client(secured, certificates, WORKER, worker_id="w-1") as worker:
        for name in ("Cancel", "Redrive", "Purge"):
            with pytest.raises(PermissionDenied, match="needs a token with the admin role"):
                await calls[name](worker)
        assert await state_bytes(secured) == before
        await worker.heartbeat(job_id)
        await worker.complete(job_id)
    async with client(secured, certificates, ADMIN) as admin:
        assert await admin.redrive([dead_id]) == [dead_id]
        assert await admin.cancel(dead_id) is True


async def test_a_bound_token_acts_only_as_its_workers(
    secured: BrokerProcess, certificates: Certificates
) -> None:
    async with client(secured, certificates, BOUND, worker_id="build-7") as bound:
        job_id = await bound.push(b"for builders", queue="builds")
        job = await bound.claim(queues=["builds"])
        assert job is not None
        assert job.id == job_id
        before = await state_bytes(secured)
        # The same token, naming a worker id outside its prefix: refused whole.
        for call in (
            lambda: bound.connection.claim("intruder", ["builds"], 0, None),
            lambda: bound.connection.heartbeat(job_id, "intruder"),
            lambda: bound.connection.complete_batch(
                [(job_id, "build-7", None), (job_id + "x", "intruder", None)]
            ),
        ):
            with pytest.raises(PermissionDenied, match="worker ids starting with 'build-'"):
                await call()
        assert await state_bytes(secured) == before
        await bound.complete(job_id)
    # A worker token that is not bound may act as any worker id.
    async with client(secured, certificates, WORKER, worker_id="anyone") as free:
        assert await free.claim(queues=["builds"]) is None


async def test_health_needs_no_token_and_answers_over_tls(
    secured: BrokerProcess, certificates: Certificates
) -> None:
    context = client_context(certificates.ca)
    assert await health_status(secured.port, ssl_context=context) == "SERVING"
    assert (
        await health_status(secured.port, "osqueue.v1.QueueService", ssl_context=context)
        == "SERVING"
    )


async def test_an_original_client_sends_its_token_as_metadata(
    original: tuple[ModuleType, ModuleType],  # noqa: F811 (the fixture)
    secured: BrokerProcess,
    certificates: Certificates,
) -> None:
    pb2, pb2_grpc = original
    credentials = grpc.ssl_channel_credentials(certificates.ca.read_bytes())
    with grpc.secure_channel(secured.address, credentials) as channel:
        stub = pb2_grpc.QueueServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.Push(pb2.PushRequest(data=b"from go"), timeout=5)
        assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
        token = (("authorization", f"Bearer {WORKER}"),)
        pushed = stub.Push(pb2.PushRequest(data=b"from go"), metadata=token, timeout=5)
        assert pushed.job_id


async def test_no_token_is_ever_logged(secured: BrokerProcess, certificates: Certificates) -> None:
    """Every token, right and wrong, sent here (on calls allowed and refused, so the
    test needs no other test to have run first: under pytest-xdist a worker may run
    it alone); none of them is in the broker's log."""
    for token in ALL_TOKENS:
        async with client(secured, certificates, token, worker_id="build-1") as worker:
            await worker.stats()
    async with client(secured, certificates, READ) as reader:
        with pytest.raises(PermissionDenied):
            await reader.push(b"x")
    for token in (WRONG, None):
        async with client(secured, certificates, token) as stranger:
            with pytest.raises(Unauthenticated):
                await stranger.stats()
    # The broker logs a refusal before it answers; the lines reach us on a thread.
    deadline = time.monotonic() + 10
    secured.collect()
    while "refused" not in secured.text and time.monotonic() < deadline:
        await anyio.sleep(0.05)
        secured.collect()
    assert "refused" in secured.text, "the refusals were logged"
    for token in (*ALL_TOKENS, WRONG):
        assert token not in secured.text


# -- startup ----------------------------------------------------------------------------


def broker_exit(tmp_path: Path, *flags: str, env: dict[str, str] | None = None) -> ChildProcess:
    child = ChildProcess(
        [
            sys.executable,
            "-m",
            "osqueue_io.server",
            "--listen",
            "127.0.0.1:0",
            "--data",
            str(tmp_path / "queue"),
            *flags,
        ],
        env,
    )
    assert child.wait(20) == 2, child.text
    assert not (tmp_path / "queue").exists(), "nothing was touched"
    return child


def test_unusable_tls_files_stop_the_broker_at_startup(
    tmp_path: Path, certificates: Certificates
) -> None:
    other = make_certificates(tmp_path, prefix="other-")
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello")
    cases = {
        ("--tls-cert", str(certificates.cert)): "--tls-cert and --tls-key go together",
        (
            "--tls-cert",
            str(tmp_path / "missing.pem"),
            "--tls-key",
            str(certificates.key),
        ): "cannot read the TLS certificate",
        ("--tls-cert", str(not_pem), "--tls-key", str(certificates.key)): "is not PEM",
        (
            "--tls-cert",
            str(certificates.cert),
            "--tls-key",
            str(other.key),
        ): "cannot be used together",
    }
    for flags, message in cases.items():
        assert message in broker_exit(tmp_path, *flags).text


def test_bad_tokens_stop_the_broker_without_quoting_them(tmp_path: Path) -> None:
    secret = secrets.token_urlsafe(24)
    token_file = tmp_path / "tokens"
    token_file.write_text(f"read:{READ}\nsuperuser:{secret}\n")
    child = broker_exit(tmp_path, "--token-file", str(token_file))
    assert "line 2" in child.text
    assert "names no known role" in child.text
    assert secret not in child.text
    assert READ not in child.text
    child = broker_exit(tmp_path, "--token", f"admin:{secret}!")
    assert "may hold only" in child.text
    assert secret not in child.text
    child = broker_exit(tmp_path, env={"OSQUEUE_TOKENS": f"admin:{secret},read:short"})
    assert "OSQUEUE_TOKENS entry 2" in child.text
    assert secret not in child.text
    assert "16 to 256 characters" in child.text


async def test_tokens_from_the_environment_and_a_flag(tmp_path: Path) -> None:
    from_env, from_flag = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    broker = BrokerProcess(
        str(tmp_path / "queue"),
        "--token",
        f"read:{from_flag}",
        "--owner-lease",
        "0",
        env={"OSQUEUE_TOKENS": f"admin:{from_env}"},
    )
    try:
        async with Worker(broker.address, token=from_flag, timeout=5) as reader:
            await reader.stats()
            with pytest.raises(PermissionDenied):
                await reader.push(b"x")
        async with Worker(broker.address, token=from_env, timeout=5) as admin:
            await admin.push(b"x")
        assert "prefer --token-file" in broker.text
    finally:
        broker.kill()
    broker.collect()
    assert from_env not in broker.text
    assert from_flag not in broker.text


def test_the_client_refuses_what_it_could_not_send() -> None:
    from osqueue_core import InvalidArgument

    for token in ("", "with space", "x" * 300, "caf\u00e9"):
        with pytest.raises(InvalidArgument) as refused:
            Worker("127.0.0.1:1", token=token)
        assert token not in str(refused.value) or not token
    with pytest.raises(InvalidArgument, match="tls_ca or ssl_context"):
        Worker("127.0.0.1:1", tls_ca="ca.pem", ssl_context=ssl.create_default_context())
