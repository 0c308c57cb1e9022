"""The soak's subprocesses: broker processes on one fixed port, and moto's S3 server.

Each broker writes its log to a file of its own (``broker-0007.log``); the soak reads
the files afterwards for tracebacks and errors. "Serving" means the port accepts TCP
connections: the broker binds its port first but listens only once it has taken over
the state, so this needs nothing from the broker's log format.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import anyio
import anyio.abc
import attrs

from tests.io.conftest import S3Server

REPO_ROOT = Path(__file__).resolve().parents[3]
#: Environment variables that could point a broker at a real cloud.
_CLOUD_ENV_PREFIXES = ("AWS_", "GOOGLE_", "AZURE_", "AZURITE_", "OSQUEUE_")
_PROBLEM = re.compile(r"Traceback \(most recent call last\)| ERROR | CRITICAL |Fatal Python error")
_WARNING = re.compile(r" WARNING ")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def broker_port() -> int:
    """A free port on 127.0.0.1 below the ephemeral range, for the brokers to share.

    While the broker is down its port is free, and a port in the ephemeral range could
    be handed to some outgoing connection meanwhile; the next broker would then fail to
    bind it (the soak would report that broker as not starting).
    """
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as ranges:
            ephemeral_low = int(ranges.read().split()[0])
    except (OSError, ValueError, IndexError):
        return free_port()
    rng = random.Random()
    for _ in range(100):
        port = rng.randrange(10000, max(10001, ephemeral_low))
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    return free_port()


def child_env(extra: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without cloud settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_CLOUD_ENV_PREFIXES)}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


async def accepts_connections(port: int) -> bool:
    try:
        with anyio.fail_after(0.5):
            stream = await anyio.connect_tcp("127.0.0.1", port)
    except (OSError, TimeoutError):
        return False
    await stream.aclose()
    return True


@attrs.define
class BrokerProcess:
    """One broker subprocess of the soak."""

    number: int
    process: anyio.abc.Process
    log_path: Path
    spawned_at: float
    #: When its port first accepted a connection (None: not yet, or never).
    serving_at: float | None = None
    #: Set by the soak when it sent SIGKILL.
    killed: bool = False
    serving: anyio.Event = attrs.Factory(anyio.Event)

    @property
    def startup_time(self) -> float | None:
        return None if self.serving_at is None else self.serving_at - self.spawned_at

    @property
    def exited(self) -> bool:
        return self.process.returncode is not None

    def send_kill(self) -> None:
        """SIGKILL now, without waiting (safe to call from any callback)."""
        self.killed = True
        self.signal(signal.SIGKILL)

    def signal(self, signum: int) -> None:
        # Not Popen.send_signal: it polls first, and that poll may reap an exited child
        # before asyncio's child watcher does, which then reports exit status 255.
        if not self.exited:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signum)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def problems(self) -> list[str]:
        """Log lines that show an unexpected error (tracebacks, ERROR lines)."""
        return [line for line in self.log_text().splitlines() if _PROBLEM.search(line)]

    def warnings(self) -> list[str]:
        return [line for line in self.log_text().splitlines() if _WARNING.search(line)]


class Brokers:
    """Starts, watches and stops the soak's brokers, one at a time, all on ``port``."""

    def __init__(
        self,
        data_url: str,
        *,
        port: int,
        env: Mapping[str, str],
        log_dir: Path,
        lease_timeout: float,
        spill_jobs: int,
        tasks: anyio.abc.TaskGroup,
    ) -> None:
        self.data_url = data_url
        self.port = port
        self.env = child_env(env)
        self.log_dir = log_dir
        self.lease_timeout = lease_timeout
        self.spill_jobs = spill_jobs
        self.started: list[BrokerProcess] = []
        self._tasks = tasks

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def spawn(self) -> BrokerProcess:
        """Start a broker; it serves once ``broker.serving`` is set."""
        number = len(self.started) + 1
        log_path = self.log_dir / f"broker-{number:04d}.log"
        with log_path.open("wb") as log:  # the child keeps its own descriptor
            process = await anyio.open_process(
                [
                    sys.executable,
                    "-m",
                    "osqueue_io.server",
                    "--listen",
                    self.address,
                    "--data",
                    self.data_url,
                    "--identity",
                    f"soak-broker-{number}",
                    "--heartbeat-timeout",
                    f"{self.lease_timeout}s",
                    "--heartbeat-check",
                    "1s",
                    # Every acknowledged push must end completed: no job may run out of
                    # attempts, however often kills expire its lease.
                    "--max-attempts",
                    "0",
                    "--spill-jobs",
                    str(self.spill_jobs),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO_ROOT,
                env=self.env,
            )
        broker = BrokerProcess(number, process, log_path, time.monotonic())
        self.started.append(broker)
        self._tasks.start_soon(self._watch_startup, broker)
        return broker

    async def _watch_startup(self, broker: BrokerProcess) -> None:
        while not broker.exited and not broker.killed:
            if await accepts_connections(self.port):
                broker.serving_at = time.monotonic()
                broker.serving.set()
                return
            await anyio.sleep(0.01)

    async def wait_serving(self, broker: BrokerProcess) -> bool:
        """True once ``broker`` serves; False if it exits first. The caller bounds it."""
        while not broker.serving.is_set():
            if broker.exited:
                return False
            with anyio.move_on_after(0.05):
                await broker.serving.wait()
        return not broker.exited

    async def kill(self, broker: BrokerProcess) -> None:
        """SIGKILL (unless sent already), and wait until the process is gone."""
        if not broker.killed:
            broker.send_kill()
        await broker.process.wait()

    async def terminate(self, broker: BrokerProcess) -> int:
        """SIGTERM; the exit code. The caller bounds it (and kills on a timeout)."""
        broker.signal(signal.SIGTERM)
        return await broker.process.wait()

    async def kill_all(self) -> None:
        with anyio.CancelScope(shield=True):
            for broker in self.started:
                if not broker.exited:
                    await self.kill(broker)


class MotoServer:
    """moto's S3 server as a subprocess on 127.0.0.1, with one bucket; ``s3`` says how
    to reach it (the io tests' :class:`~tests.io.conftest.S3Server`)."""

    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self.s3 = S3Server(endpoint=f"http://127.0.0.1:{self.port}", bucket="osqueue-soak")
        self.log_path = log_path
        self.process: anyio.abc.Process | None = None

    def env(self, endpoint: str) -> dict[str, str]:
        """For a broker process: how to sign, and ``endpoint`` (a relay in front of
        this server) as where S3 is."""
        return attrs.evolve(self.s3, endpoint=endpoint).env

    async def start(self) -> None:
        """Start the server and create the bucket. The caller bounds it."""
        with self.log_path.open("wb") as log:
            self.process = await anyio.open_process(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=child_env({}),
            )
        while not await accepts_connections(self.port):
            if self.process.returncode is not None:
                raise RuntimeError(f"moto_server exited: see {self.log_path}")
            await anyio.sleep(0.05)
        await anyio.to_thread.run_sync(self._create_bucket)

    def _create_bucket(self) -> None:
        # moto checks no signatures: a bare PUT creates the bucket.
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.request("PUT", f"/{self.s3.bucket}")
            response = connection.getresponse()
            response.read()
        finally:
            connection.close()
        if response.status != 200:
            raise RuntimeError(f"moto refused to create the bucket: {response.status}")

    async def stop(self) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        with anyio.CancelScope(shield=True):
            self.process.terminate()
            with anyio.move_on_after(10):
                await self.process.wait()
                return
            self.process.kill()
            await self.process.wait()
