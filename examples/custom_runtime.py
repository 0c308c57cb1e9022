"""A custom runtime: drive ``osqueue_core`` synchronously against plain files.

This file imports nothing from ``osqueue_io``: it is the proof that the core is usable
on its own. It keeps every object as a file under a directory, with the object's
version in a sidecar file, and runs one broker loop in the calling thread:

    feed an input (with ``now`` and ``wall``) -> take_effects() -> perform each
    storage effect -> feed the result back -> ... -> tick at next_deadline()

The core asks for five storage primitives (read an object, read only its version,
write it if its version still matches, list keys under a prefix, delete an object);
timers run on ``time.monotonic()``, and ``time.time()`` only stamps jobs.

It is single-process by design (no locking); ``osqueue_io.storage.LocalFileStore`` is
the real, multi-process local backend. See docs/custom-runtime.md.

Run: ``python examples/custom_runtime.py [DIRECTORY]``.
"""

from __future__ import annotations

import sys
import tempfile
import time
import uuid
from pathlib import Path

from osqueue_core import (
    Broker,
    BrokerConfig,
    Claim,
    Claimed,
    Command,
    Complete,
    DeleteObject,
    Effect,
    KeysListed,
    ListKeys,
    ObjectDeleted,
    ObjectRead,
    ObjectWritten,
    Push,
    Pushed,
    ReadObject,
    ReadVersion,
    Reply,
    StorageResult,
    VersionRead,
    WriteConflicted,
    WriteObject,
)

SIDECARS = (".version", ".tmp")


class FileStore:
    """Objects as files; a version counter per object in ``<file>.version``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _paths(self, key: str) -> tuple[Path, Path]:
        path = self.root / key
        return path, path.with_name(path.name + ".version")

    def _version(self, key: str) -> int | None:
        version = self._paths(key)[1]
        return int(version.read_text()) if version.exists() else None

    def execute(self, effect: Effect) -> StorageResult:
        match effect:
            case ReadObject(op_id, key):
                path, _ = self._paths(key)
                if not path.exists():
                    return ObjectRead(op_id, None, None)
                return ObjectRead(op_id, path.read_bytes(), self._version(key))
            case ReadVersion(op_id, key):
                return VersionRead(op_id, self._version(key))
            case WriteObject(op_id, key, data, expected):
                path, version = self._paths(key)
                current = self._version(key)
                if current != expected:  # expected None means "must not exist yet"
                    return WriteConflicted(op_id)
                new_version = (current or 0) + 1
                self._write(path, data)
                self._write(version, str(new_version).encode())
                return ObjectWritten(op_id, new_version)
            case ListKeys(op_id, prefix, limit, start_after):
                base = self.root / prefix
                keys = sorted(
                    key
                    for path in (base.rglob("*") if base.is_dir() else [])
                    if path.is_file()
                    and not path.name.endswith(SIDECARS)
                    and (key := path.relative_to(self.root).as_posix()) > (start_after or "")
                )
                return KeysListed(op_id, tuple(keys[:limit]))
            case DeleteObject(op_id, key):
                for path in self._paths(key):  # absent counts as deleted
                    path.unlink(missing_ok=True)
                return ObjectDeleted(op_id)
        raise TypeError(f"not a storage effect: {effect!r}")

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_bytes(data)
        temporary.replace(path)  # atomic: readers see the old or the new file


class SyncRuntime:
    """Runs a broker until each request has its reply. Policy stays in the core."""

    def __init__(self, store: FileStore, config: BrokerConfig) -> None:
        self.store = store
        self.broker = Broker(config, identity="custom-runtime", incarnation=uuid.uuid4().hex)
        self.replies: dict[object, Reply] = {}
        self.broker.start(time.monotonic(), time.time())
        self._run_effects()

    def _run_effects(self) -> None:
        # Storage results are new inputs, which may produce new effects: loop until quiet.
        while effects := self.broker.take_effects():
            for effect in effects:
                if isinstance(effect, Reply):
                    self.replies[effect.request_id] = effect
                else:
                    result = self.store.execute(effect)
                    self.broker.receive(result, time.monotonic(), time.time())

    def call(self, command: Command) -> Reply:
        self.broker.submit(command, time.monotonic(), time.time())
        self._run_effects()
        while command.request_id not in self.replies:
            # Nothing left to run: only time can move things on (a lease, a retry).
            deadline = self.broker.next_deadline()
            if deadline is None:
                raise RuntimeError(f"no reply and nothing scheduled for {command!r}")
            time.sleep(max(0.0, deadline - time.monotonic()))
            self.broker.tick(time.monotonic(), time.time())
            self._run_effects()
        return self.replies.pop(command.request_id)

    def stop(self) -> None:
        self.broker.stop(time.monotonic(), time.time())
        self._run_effects()


def main(root: Path) -> None:
    runtime = SyncRuntime(FileStore(root), BrokerConfig(heartbeat_timeout=5))
    pushed = [runtime.call(Push(f"push-{i}", f"task {i}".encode())) for i in range(3)]
    print("pushed:", [r.result.job_id for r in pushed if isinstance(r.result, Pushed)])
    for n in range(3):
        reply = runtime.call(Claim(f"claim-{n}", worker_id="worker-1"))
        assert isinstance(reply.result, Claimed), reply
        job = reply.result
        print(f"claimed {job.job_id}: {job.payload.decode()}")
        done = runtime.call(Complete(f"complete-{n}", job.job_id, "worker-1"))
        assert done.ok, done
    runtime.stop()
    archives = sorted(p.relative_to(root) for p in root.rglob("*.json") if "archive" in p.parts)
    print("state:", (root / "state.json").read_text())
    print("archive objects:", [str(p) for p in archives])
    print("phase:", runtime.broker.phase.value)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(Path(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory(prefix="osqueue-custom-") as directory:
            main(Path(directory))
