"""docs/operations.md, "A secured broker, step by step", done as a person does it.

The steps are read from the section's fenced blocks, in order, and each runs as
written, with only these changes: the broker listens on ports it picks (port 0) instead
of 9090, 8080 and 9100, which the later steps are given instead; its files are named
by absolute paths (it runs from the repository); ``python`` and ``osqueue`` are this
environment's; ``osqueue`` commands get ``--json`` so that their answers can be
checked. curl's requests are made with urllib, with the CA file, token file and URL the
doc's curl command names, offering ``h2`` by ALPN as curl does. The shell steps run in
bash, in a fresh directory. Everything listens on 127.0.0.1.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import attrs

from osqueue_io.security import client_context
from tests.io.cli.conftest import osqueue, wait_until
from tests.io.distributed.conftest import REPO_ROOT, Storage
from tests.io.http.conftest import WebBroker

SECTION = "## A secured broker, step by step"
#: The ports the doc's broker listens on: gRPC, dashboard, metrics.
DOC_PORTS = {"grpc": 9090, "dashboard": 8080, "metrics": 9100}
RUN_TIMEOUT = 60.0


@attrs.frozen
class Block:
    """One fenced block of the section: its language and its text, unindented."""

    language: str
    text: str


def walkthrough() -> tuple[str, list[Block]]:
    """The section's text and its fenced blocks, in order."""
    text = (REPO_ROOT / "docs" / "operations.md").read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    section = text[start:end]
    fences = re.finditer(r"^( *)```(\w+)\n(.*?)^\1```$", section, re.MULTILINE | re.DOTALL)
    return section, [Block(m.group(2), textwrap.dedent(m.group(3))) for m in fences]


def words_of(command: str) -> list[str]:
    """A shell command's words, continuation lines joined."""
    return shlex.split(command.replace("\\\n", " "))


def run(args: list[str], directory: Path, **env: str) -> list[str]:
    """Run ``args`` in ``directory`` (with ``env`` added); its output lines, once it
    succeeded."""
    done = subprocess.run(
        args,
        cwd=directory,
        env={**os.environ, **env},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, f"{args[-1]}\n-> {done.returncode}: {done.stderr}"
    return done.stdout.splitlines()


def run_shell(block: Block, directory: Path) -> None:
    """A shell step, in bash, with this environment's ``python`` first on the path."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    run(["bash", "-e", "-c", block.text], directory, PATH=path)


def run_python(block: Block, name: str, directory: Path) -> list[str]:
    """Save a Python step as ``name`` and run it as the doc says; its output lines."""
    (directory / name).write_text(block.text)
    return run([sys.executable, name], directory)


@attrs.frozen
class Curl:
    """What a curl command of the doc asks for, and the grep it pipes into, if any."""

    url: str
    ca: str
    token_file: str
    grep: str | None

    @classmethod
    def parse(cls, block: Block) -> Curl:
        command, _, pipe = block.text.partition(" | ")
        words = words_of(command)
        assert words[0] == "curl"
        header = re.fullmatch(
            r"Authorization: Bearer \$\(cat (\S+)\)", words[words.index("-H") + 1]
        )
        assert header is not None, "the token is sent from its file"
        urls = [word for word in words if word.startswith("https://")]
        assert len(urls) == 1
        grep = words_of(pipe) if pipe else None
        assert grep is None or grep[:2] == ["grep", "-E"]
        pattern = grep[2] if grep is not None else None
        return cls(urls[0], words[words.index("--cacert") + 1], header.group(1), pattern)

    def fetch(self, directory: Path, ports: dict[int, int]) -> list[str]:
        """The answer's lines (those the grep keeps), fetched as curl would."""
        url = localize(self.url, ports)
        assert urlsplit(url).hostname == "127.0.0.1"
        token = (directory / self.token_file).read_text().strip()
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
        context = client_context(directory / self.ca, alpn=("h2", "http/1.1"))
        with urllib.request.urlopen(request, context=context, timeout=10) as answer:
            assert answer.status == 200
            lines = answer.read().decode().splitlines()
        return (
            lines if self.grep is None else [line for line in lines if re.search(self.grep, line)]
        )


def localize(text: str, ports: dict[int, int]) -> str:
    """``text`` with the doc's ports replaced by the ones the broker listens on."""
    for doc_port, port in ports.items():
        text = text.replace(f"127.0.0.1:{doc_port}", f"127.0.0.1:{port}")
    return text


def start_broker(block: Block, directory: Path) -> WebBroker:
    """The doc's broker command, on ports it picks and with absolute file names."""
    words = words_of(block.text)
    assert words[:3] == ["python", "-m", "osqueue_io.server"]
    assert words[-1] == "&", "the broker runs in the background of the same shell"
    flags = dict(zip(words[3:-1:2], words[4:-1:2], strict=True))
    assert flags.pop("--listen") == f"127.0.0.1:{DOC_PORTS['grpc']}"
    assert flags.pop("--http-listen") == f"127.0.0.1:{DOC_PORTS['dashboard']}"
    assert flags.pop("--metrics-listen") == f"127.0.0.1:{DOC_PORTS['metrics']}"
    data = flags.pop("--data")
    assert set(flags) == {"--tls-cert", "--tls-key", "--token-file"}
    files = [word for flag, name in flags.items() for word in (flag, str(directory / name))]
    return WebBroker(str(directory / data), *files)


def queue_row(page: list[str], queue: str) -> dict[str, int]:
    """The numbers of ``queue``'s row in the dashboard's queues table."""
    html = "\n".join(page)
    row = re.search(rf'<tr data-queue="{queue}">(.*?)</tr>', html, re.DOTALL)
    assert row is not None, f"no row for {queue!r} on the page"
    cells = re.findall(r'data-field="(\w+)">(?:<a [^>]*>)?(\d+)<', row.group(1))
    return {field: int(number) for field, number in cells}


def test_the_secured_broker_walkthrough(tmp_path: Path) -> None:
    section, blocks = walkthrough()
    assert [block.language for block in blocks] == [
        *("sh", "sh", "sh", "python", "sh", "text", "sh", "sh", "python", "sh")
    ], "the steps of the doc and of this test differ: change both"
    certificate, tokens, server, push, metrics, shown, dashboard, commands, work, archive = blocks

    # 1, 2: the certificate and the tokens, by the doc's own commands.
    run_shell(certificate, tmp_path)
    run_shell(tokens, tmp_path)
    roles = ("admin", "worker", "read")
    secrets = {role: (tmp_path / f"{role}.token").read_text().strip() for role in roles}
    token_file = tmp_path / "tokens"
    assert token_file.read_text().splitlines() == [f"{r}:{secrets[r]}" for r in roles]
    assert token_file.stat().st_mode & 0o077 == 0, "the token file is readable by others"

    # 3: the broker, over TLS on all three listeners.
    broker = start_broker(server, tmp_path)
    try:
        assert broker.lines_matching(rf"listening on {re.escape(broker.address)} \(TLS\)")
        assert broker.dashboard.startswith("https://")
        assert broker.metrics.startswith("https://")
        ports = {
            DOC_PORTS["grpc"]: broker.port,
            DOC_PORTS["dashboard"]: urlsplit(broker.dashboard).port or 0,
            DOC_PORTS["metrics"]: urlsplit(broker.metrics).port or 0,
        }

        # 4: three jobs, one dead.
        printed = run_python(Block("python", localize(push.text, ports)), "push.py", tmp_path)
        pushed = [line.removeprefix("pushed: ") for line in printed[:3]]
        assert [line.startswith("pushed: ") for line in printed] == [True, True, True, False]
        dead = printed[3].removeprefix("dead: ")
        assert dead in pushed

        # 5: the metrics, as the doc shows them (a commit answered is in the metrics).
        curl = Curl.parse(metrics)
        assert (curl.url, curl.ca, curl.token_file) == (
            f"https://127.0.0.1:{DOC_PORTS['metrics']}/metrics",
            "broker.pem",
            "read.token",
        )
        assert curl.fetch(tmp_path, ports) == shown.text.splitlines()

        # 6: the dashboard's queues table.
        page = Curl.parse(dashboard)
        assert page.url == f"https://127.0.0.1:{DOC_PORTS['dashboard']}/"
        assert (page.ca, page.token_file) == ("broker.pem", "read.token")
        assert queue_row(page.fetch(tmp_path, ports), "emails") == {
            "ready": 2,
            "delayed": 0,
            "claimed": 0,
            "dead": 1,
        }

        # 7: stats and the dead letter from storage; the redrive through the broker.
        lines = [words_of(localize(line, ports)) for line in commands.text.splitlines()]
        assert [words[:3] for words in lines] == [
            ["osqueue", "stats", "--data"],
            ["osqueue", "dead", "ls"],
            ["osqueue", "dead", "redrive"],
        ]
        stats, dead_ls, redrive = (osqueue(*w[1:], "--json", cwd=tmp_path) for w in lines)
        [emails] = stats.json()["queues"]
        assert (emails["queue"], emails["ready"], emails["dead"]) == ("emails", 2, 1)
        assert [job["id"] for job in dead_ls.json()["jobs"]] == [dead]
        assert redrive.json() == {"redriven": [dead]}
        assert curl.fetch(tmp_path, ports) == [
            "osqueue_dead_letters_total 1.0",  # a counter: the death happened
            'osqueue_jobs{queue="emails",status="ready"} 3.0',
            'osqueue_jobs{queue="emails",status="delayed"} 0.0',
            'osqueue_jobs{queue="emails",status="claimed"} 0.0',
            'osqueue_jobs{queue="emails",status="dead"} 0.0',
        ]

        # 8: a worker completes all three.
        printed = run_python(Block("python", localize(work.text, ports)), "work.py", tmp_path)
        assert sorted(printed) == sorted(f"completed: {job_id}" for job_id in pushed)

        # 9: the archive, once the broker wrote it (the state then holds no job).
        storage = Storage(str(tmp_path / "queue"), {}, {})
        wait_until(lambda: not storage.read_state().jobs, "the finished jobs archived")
        lines = [words_of(line) for line in archive.text.splitlines()]
        assert [words[:3] for words in lines] == [
            ["osqueue", "archive", "ls"],
            ["osqueue", "archive", "cat"],
        ]
        listed, records = (osqueue(*w[1:], "--json", cwd=tmp_path) for w in lines)
        buckets = listed.json()
        assert buckets["objects"] >= 1
        assert sum(bucket["objects"] for bucket in buckets["buckets"]) == buckets["objects"]
        finished = {record["id"]: record["status"] for record in records.lines()}
        assert finished == dict.fromkeys(pushed, "completed")

        # 10: SIGTERM stops it cleanly. It warned of the dead letter alone (not of its
        # token file, say), and logged no token.
        assert "`kill %1`" in section
        assert broker.terminate() == 0
        warnings = [found.string for found in broker.lines_matching(r" WARNING ")]
        assert len(warnings) == 1, broker.text
        assert f"job {dead!r} is a dead letter" in warnings[0]
        assert not [token for token in secrets.values() if token in broker.text]
    finally:
        broker.kill()
