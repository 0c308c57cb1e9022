"""``osqueue``'s changes against a broker with TLS and tokens: ``--tls-ca`` and
``--token-file`` (or ``$OSQUEUE_TOKEN``) reach it, and every way of getting them wrong is
one line that names the option to give, with nothing changed."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from osqueue_io.sync import RemoteQueue
from tests.io.cli.conftest import osqueue
from tests.io.distributed.conftest import BrokerProcess
from tests.io.security.certs import make_certificates

WORKER = secrets.token_urlsafe(24)
ADMIN = secrets.token_urlsafe(24)


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BrokerProcess, Path]]:
    """A broker with TLS and a worker and an admin token; the directory holding its
    CA (``ca.pem``) and a token file per role (``worker.token``, ``admin.token``)."""
    directory = tmp_path_factory.mktemp("secured")
    make_certificates(directory)
    for role, token in (("worker", WORKER), ("admin", ADMIN)):
        (directory / f"{role}.token").write_text(token + "\n")
    broker = BrokerProcess(
        str(directory / "queue"),
        *("--tls-cert", str(directory / "server.pem"), "--tls-key", str(directory / "server.key")),
        *("--token", f"worker:{WORKER}", "--token", f"admin:{ADMIN}"),
        *("--owner-lease", "0"),  # an idle broker writes nothing: the state bytes stay
    )
    yield broker, directory
    broker.kill()


def dead_letter(broker: BrokerProcess, directory: Path) -> str:
    with RemoteQueue(broker.address, bytes, tls_ca=directory / "ca.pem", token=WORKER) as client:
        job_id = client.push(b"doomed", queue="mail")
        job = client.claim(queues=["mail"])
        assert job is not None
        assert job.id == job_id
        client.fail(job, "boom", retry=False)
    return job_id


@pytest.mark.parametrize(
    ("flags", "code", "says"),
    [
        ((), 1, "--tls-ca PATH"),  # plaintext to a TLS broker
        (("--tls-ca", "ca.pem"), 1, "--token-file PATH"),  # no token
        (("--tls-ca", "ca.pem", "--token-file", "worker.token"), 1, "admin role"),
        (("--tls-ca", "missing.pem", "--token-file", "admin.token"), 2, "'missing.pem'"),
        (("--tls-ca", "ca.pem", "--token-file", "missing.token"), 2, "'missing.token'"),
        (("--tls-ca", "ca.pem", "--token-file", "admin.token", "--token", ADMIN), 2, "not both"),
    ],
)
def test_what_a_secured_broker_refuses_is_one_line_naming_the_option(
    secured: tuple[BrokerProcess, Path], flags: tuple[str, ...], code: int, says: str
) -> None:
    broker, directory = secured
    job_id = dead_letter(broker, directory)
    state = Path(broker.data) / "state.json"
    before = state.read_bytes()
    ran = osqueue("dead", "redrive", job_id, "--broker", broker.address, *flags, cwd=directory)
    assert ran.code == code, ran.stderr
    line = ran.error_line()
    assert line.startswith("osqueue dead redrive: error: ")
    assert says in line
    assert ADMIN not in line
    assert WORKER not in line
    assert state.read_bytes() == before, "a refused change changed nothing"


def test_the_ca_and_an_admin_token_redrive_cancel_and_purge(
    secured: tuple[BrokerProcess, Path],
) -> None:
    broker, directory = secured
    redriven, purged = dead_letter(broker, directory), dead_letter(broker, directory)
    security = ("--tls-ca", "ca.pem", "--token-file", "admin.token")
    ran = osqueue(
        "dead",
        "redrive",
        redriven,
        "--broker",
        broker.address,
        *security,
        "--json",
        cwd=directory,
    )
    assert ran.json() == {"redriven": [redriven]}
    # The owner found through --data (it advertises 127.0.0.1, which the certificate
    # names), and the token from the environment.
    ran = osqueue(
        "cancel",
        redriven,
        "--data",
        broker.data,
        "--tls-ca",
        "ca.pem",
        "--json",
        env={"OSQUEUE_TOKEN": ADMIN},
        cwd=directory,
    )
    assert ran.json() == {"job_id": redriven, "at_once": True}
    ran = osqueue("dead", "purge", purged, "--broker", broker.address, *security, cwd=directory)
    assert ran.code == 0, ran.stderr
    assert ran.stdout.splitlines() == ["purged 1 dead letter", purged]


def test_reads_need_no_broker_credentials(secured: tuple[BrokerProcess, Path]) -> None:
    """Reads go to the storage, which tokens do not guard (docs/security.md)."""
    broker, directory = secured
    job_id = dead_letter(broker, directory)
    listed = osqueue("dead", "ls", "--data", broker.data, "--json").json()
    assert job_id in [job["id"] for job in listed["jobs"]]
