"""The local backend's directory lock: an exclusive ``flock`` with a bounded, logged wait.

Why bounded: a writer frozen while it holds the lock (a broker stopped with SIGSTOP, a
process stuck on a hung disk, one paused in a debugger) would otherwise block every
other writer of that directory forever, silently, inside a worker thread that no anyio
timeout can interrupt, so a successor broker could never take over. ``flock`` has no
timeout of its own, hence the poll with ``LOCK_NB`` and a short, growing pause.

Why the holder record: after taking the lock a writer puts ``pid=<pid> host=<host>`` in
the lock file, so a writer that has to wait can say whom it waits for. The record is
informational only: it may be stale (the holder changed a moment ago), empty (a writer
from an older osqueue) or garbage (someone edited the file), and is read defensively.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from osqueue_io.storage.errors import WriteNotApplied

log = logging.getLogger("osqueue.storage.local")

#: How long a write waits for the lock before it gives up, unless told otherwise. Well
#: below the runtime's default ``storage_timeout`` (30 s): the runtime cannot interrupt
#: a thread waiting here, so the wait must end on its own first.
DEFAULT_LOCK_TIMEOUT = 10.0

#: A wait longer than this is logged once (or half the timeout, if that is shorter).
LOCK_WARN_AFTER = 1.0

# The pause between attempts doubles from the first to the last value: a lock held for
# one ~1 ms write is usually free again at once, a frozen holder is not worth polling fast.
_FIRST_PAUSE = 0.001
_LONGEST_PAUSE = 0.02

# A holder record is one short line; anything longer or shaped otherwise is not one.
_MAX_RECORD_BYTES = 128
_RECORD = re.compile(r"pid=(\d{1,10}) host=([A-Za-z0-9._-]{1,64})")
_HOST_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


@contextlib.contextmanager
def directory_lock(lock_path: Path, *, timeout: float, key: str, operation: str) -> Iterator[None]:
    """Hold the exclusive lock ``lock_path`` for the body; wait at most ``timeout`` seconds.

    Raises :class:`WriteNotApplied` (naming the lock file, its last recorded holder and
    the wait) if the lock stays taken, so a caller knows nothing was written. ``key`` and
    ``operation`` are the write's, for that message.
    """
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError as error:
        raise WriteNotApplied(key, operation, f"{lock_path}: {error}") from error
    try:
        _acquire(fd, lock_path, timeout=timeout, key=key, operation=operation)
        _record_holder(fd)
        yield
    finally:
        os.close(fd)  # also releases the flock


def _acquire(fd: int, lock_path: Path, *, timeout: float, key: str, operation: str) -> None:
    if _try_lock(fd, lock_path, key, operation):
        return
    started = time.monotonic()
    deadline = started + timeout
    warn_at = started + min(LOCK_WARN_AFTER, timeout / 2)
    warned = False
    pause = _FIRST_PAUSE
    while True:
        now = time.monotonic()
        if not warned and now >= warn_at:
            warned = True
            log.warning(
                "waiting %.1fs so far for the lock %s, held by %s; writes to this directory "
                "fail after %.1fs (is another broker frozen?)",
                now - started,
                lock_path,
                _read_holder(fd),
                timeout,
            )
        if now >= deadline:
            raise WriteNotApplied(
                key,
                operation,
                f"the lock {lock_path} is still held by {_read_holder(fd)} after waiting "
                f"{now - started:.1f}s; is another broker frozen (stopped, or stuck on a "
                "hung disk)?",
            )
        next_event = deadline if warned else min(deadline, warn_at)
        time.sleep(max(0.0, min(pause, next_event - now)))
        pause = min(pause * 2, _LONGEST_PAUSE)
        if _try_lock(fd, lock_path, key, operation):
            return


def _try_lock(fd: int, lock_path: Path, key: str, operation: str) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as error:
        raise WriteNotApplied(key, operation, f"cannot lock {lock_path}: {error}") from error
    return True


def _holder_record() -> bytes:
    """This process's holder record: ``pid=<pid> host=<host>`` and a newline."""
    host = _HOST_UNSAFE.sub("_", socket.gethostname())[:64] or "unknown"
    return f"pid={os.getpid()} host={host}\n".encode("ascii")


def _record_holder(fd: int) -> None:
    record = _holder_record()
    # Write first, then cut: a reader never sees an empty file, at worst the new line
    # followed by the tail of an older, longer one, and it reads only the first line.
    # Failures are ignored: the record only helps a waiting writer explain itself, and
    # a disk that cannot take it fails the real write a moment later anyway.
    with contextlib.suppress(OSError):
        os.pwrite(fd, record, 0)
        os.ftruncate(fd, len(record))


def _read_holder(fd: int) -> str:
    """Describe the lock's last recorded holder, tolerating any content of the file."""
    try:
        raw = os.pread(fd, _MAX_RECORD_BYTES, 0)
    except OSError:
        return "an unknown holder (the lock file cannot be read)"
    first_line = raw.split(b"\n", 1)[0].decode("ascii", errors="replace")
    match = _RECORD.fullmatch(first_line)
    if match is None:
        return "an unknown holder (the lock file names none)"
    return f"pid {match.group(1)} on host {match.group(2)}"
