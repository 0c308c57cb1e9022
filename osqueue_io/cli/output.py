"""What the ``osqueue`` command prints: JSON for programs, rich tables for people.

``--json`` output is one JSON document on stdout (``archive cat``: one per line), with
the field names documented in docs/operations.md; times are UNIX seconds, as in the state
object. Tables go to stdout too; progress, warnings and errors go to stderr, so stdout is
always the answer alone.

Everything shown comes from storage or from a broker and is not trusted: in a table, text
is cut to a width and its control characters are shown escaped (a job's ``last_error`` is
whatever a worker sent, and must not be able to move the cursor or change colours); it
is never parsed as rich markup.
"""

from __future__ import annotations

import base64
import binascii
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table
from rich.text import Text

from osqueue_core import DEFAULT_QUEUE, Job, encode_job
from osqueue_io.cli.times import format_time

__all__ = [
    "clean",
    "counted",
    "emit_json",
    "job_record",
    "job_view",
    "print_table",
    "stdout_console",
]

#: Widest a table cell of untrusted text gets (ids are up to 256 characters, errors 4,096).
CELL_WIDTH = 48
#: Widest any cell gets, whatever its caller asked for.
MAX_CELL = 1000
#: Width of tables written to something that is not a terminal (a pipe, a file): wide
#: enough that ids and times are never wrapped or cut by rich itself.
PIPE_WIDTH = 240


def counted(count: int, noun: str) -> str:
    """``count`` and ``noun``, plural unless the count is one: "1 bucket", "3 objects"."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def clean(value: object, width: int = CELL_WIDTH) -> str:
    """``value`` as one line of at most ``width`` characters, control characters
    escaped (``\\x1b``, ``\\n``), cut with ``…`` if longer."""
    if value is None:
        return ""
    text = str(value)
    if not text.isprintable():
        text = "".join(
            ch if ch.isprintable() else ch.encode("unicode_escape").decode() for ch in text
        )
    return text if len(text) <= width else text[: width - 1] + "…"


def job_record(job: Job) -> dict[str, Any]:
    """A job's record exactly as the state stores it (the canonical JSON fields)."""
    record: dict[str, Any] = orjson.loads(encode_job(job))
    return record


def job_view(
    record: Mapping[str, Any],
    now: float,
    where: str,
    *,
    segment: str | None = None,
    payload: bool = False,
) -> dict[str, Any]:
    """The documented view of a job record (inline, segment or archive; schema 1
    archive records too): ``where`` is ``inline``, ``segment`` or ``archive``. With
    ``payload``, the payload and result (base64) are added as ``data`` and ``result``.
    Raises ``ValueError`` for a record that is not a job."""
    born = record.get("born", record)  # schema 1 records keep data at the top
    job_id, seq = record.get("id"), record.get("seq")
    if not isinstance(born, Mapping) or not isinstance(job_id, str) or type(seq) is not int:
        raise ValueError("not a job record")
    status = record.get("status", "ready")
    ready_at = record.get("retry_at", born.get("run_at"))
    data = born.get("data", "")
    view: dict[str, Any] = {
        "id": job_id,
        "seq": seq,
        "queue": born.get("queue", DEFAULT_QUEUE),
        "priority": born.get("priority", 0),
        "status": status,
        "delayed": status == "ready" and _number(ready_at) and bool(ready_at > now),
        "attempts": record.get("attempts", 0),
        "max_attempts": born.get("max_attempts"),
        "created_at": born.get("created_at"),
        "ready_at": ready_at,
        "claimed_by": record.get("claimed_by"),
        "claimed_at": record.get("claimed_at"),
        "finished_at": record.get("finished_at"),
        "last_error": record.get("last_error"),
        "key": born.get("key"),
        "cancel_requested": record.get("cancel_requested", False),
        "archive_key": record.get("archive_key"),
        "where": where,
        "segment": segment,
        "payload_bytes": _decoded_length(data),
    }
    if payload:
        view["data"] = data
        view["result"] = record.get("result")
    return view


def _number(value: object) -> bool:
    return type(value) in (int, float)


def _decoded_length(data: object) -> int | None:
    if not isinstance(data, str):
        return None
    try:
        return len(base64.b64decode(data, validate=True))
    except (binascii.Error, ValueError):
        return None


def shown_status(view: Mapping[str, Any]) -> str:
    """The status a person reads: ``delayed`` for a ready job not due yet."""
    return "delayed" if view["delayed"] else str(view["status"])


def emit_json(document: object) -> None:
    """One JSON document on stdout, on one line."""
    sys.stdout.buffer.write(orjson.dumps(document) + b"\n")
    sys.stdout.buffer.flush()


def stdout_console() -> Console:
    """A console for tables on stdout: the terminal's width, or wide when piped (no
    colours or wrapping then)."""
    if sys.stdout.isatty():
        return Console(highlight=False)
    return Console(width=PIPE_WIDTH, highlight=False, no_color=True)


def print_table(
    title: str | None,
    columns: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    footer: str | None = None,
    header: bool = True,
) -> None:
    """A table of untrusted values on stdout (each cell cleaned, never markup)."""
    table = Table(
        title=title, title_justify="left", box=None, header_style="bold", show_header=header
    )
    for name in columns:
        table.add_column(name, overflow="fold", no_wrap=True)
    for row in rows:
        # Cleaned again, widely: a caller's cut is kept, a control character never passes.
        table.add_row(*(Text(clean(cell, MAX_CELL)) for cell in row))
    console = stdout_console()
    console.print(table)
    if footer:
        console.print(Text(footer))


def job_rows(views: Iterable[Mapping[str, Any]]) -> list[list[str]]:
    """Rows of the jobs table (:data:`JOB_COLUMNS`)."""
    return [
        [
            clean(view["id"]),
            clean(view["queue"]),
            shown_status(view),
            clean(view["priority"]),
            clean(view["attempts"]),
            format_time(view["created_at"] if _number(view["created_at"]) else None),
            clean(view["claimed_by"], 24),
            clean(view["last_error"], 40),
            view["where"],
        ]
        for view in views
    ]


#: Columns of the jobs table (``jobs ls``, ``dead ls``).
JOB_COLUMNS = (
    "id",
    "queue",
    "status",
    "priority",
    "attempts",
    "created",
    "holder",
    "last error",
    "where",
)


def print_job(view: Mapping[str, Any]) -> None:
    """One job as a two-column table of its fields (``jobs show``)."""
    rows: list[list[str]] = []
    for name, value in view.items():
        if name in ("created_at", "ready_at", "claimed_at", "finished_at") and _number(value):
            shown = f"{format_time(value)} ({value})"
        elif name == "status":
            shown = shown_status(view)
        elif name in ("data", "result"):
            shown = clean(value, 80)
        else:
            shown = clean(value, 200)
        rows.append([name, shown])
    print_table(None, ("field", "value"), rows)
