"""The gRPC broker as a real subprocess on 127.0.0.1, for the benchmarks.

:class:`BrokerProcess` runs ``python -m osqueue_io.server`` (or, when the store must be
wrapped, ``python -m benchmarks.serve``, the same server around a wrapped store), waits
for the line it logs once it serves, and records how long that took (``ready_seconds``:
interpreter start, imports, opening the state, binding). Its output is drained on a
thread so the pipe never fills; :meth:`stop` sends SIGTERM and waits.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
_LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")


class BrokerFailed(RuntimeError):
    """The broker exited or stayed silent instead of serving."""


class BrokerProcess:
    """A broker subprocess; ``address`` once it serves. Use :meth:`stop` (or ``with``)."""

    def __init__(
        self,
        data: str,
        *flags: str,
        env: Mapping[str, str] | None = None,
        module: str = "osqueue_io.server",
        start_timeout: float = 600.0,
    ) -> None:
        args = [sys.executable, "-m", module, "--listen", "127.0.0.1:0", "--data", data, *flags]
        started = time.perf_counter()
        self.process = subprocess.Popen(
            args,
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        self.output: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._drain, daemon=True).start()
        try:
            self.port = self._wait_for_port(start_timeout)
        except BaseException:
            self.kill()
            raise
        #: Seconds from spawning the process to its "listening" line.
        self.ready_seconds = time.perf_counter() - started

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def _drain(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def _wait_for_port(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                break
            if line is None:
                raise BrokerFailed(f"broker exited ({self.process.wait()}):\n{self.text}")
            self.output.append(line)
            if match := _LISTENING.search(line):
                return int(match.group(1))
        raise BrokerFailed(f"broker not serving after {timeout} s:\n{self.text}")

    @property
    def text(self) -> str:
        return "\n".join(self.output[-40:])

    def rss_bytes(self) -> int:
        """The broker's resident set size now (VmRSS from /proc)."""
        return rss_bytes(self.pid)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (a graceful stop), then SIGKILL if it is still running after ``timeout``."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()

    def __enter__(self) -> BrokerProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def rss_bytes(pid: int) -> int:
    """VmRSS of process ``pid``, in bytes (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def broker_flags(
    write_latency: float | None, counts_file: Path | None, backlog: int = 0
) -> Sequence[str]:
    """Flags for ``benchmarks.serve`` (only what differs from ``osqueue_io.server``)."""
    flags: list[str] = ["--backlog", str(backlog)] if backlog else []
    if write_latency is not None:
        flags += ["--write-latency", repr(write_latency)]
    if counts_file is not None:
        flags += ["--counts", str(counts_file)]
    return flags
