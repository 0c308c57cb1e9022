"""How the broker and the worker runner write their logs: text, or one JSON object a line.

``--log-format text`` (the default) writes ``time LEVEL logger: message``.
``--log-format json`` writes one JSON object per line, for log collectors::

    {"time": "2026-12-02T10:00:00.123Z", "level": "INFO", "logger": "osqueue.runtime",
     "message": "took over the queue ...", "epoch": 3, "revision": 41}

Besides ``time`` (UTC, ISO 8601 with milliseconds), ``level``, ``logger`` and
``message``, a line carries the fields its call passed as ``extra`` where they apply
(:data:`FIELDS`: ``queue``, ``epoch``, ``revision``, ``job_id``, ``worker_id``...), and
``exception`` with the traceback when there is one. Text lines already say the same in
their message. Nothing here writes a token: the code that logs never passes one.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, TextIO

import orjson

#: Log formats ``--log-format`` takes.
FORMATS = ("text", "json")
#: The ``extra`` fields a JSON line carries when a log call gives them.
FIELDS = (
    "queue",
    "epoch",
    "revision",
    "job_id",
    "worker_id",
    "identity",
    "address",
    "storage",
    "attempts",
    "reason",
    "operations",
    "state_bytes",
    "refused",
    "new_identity",
    "new_epoch",
)
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        seconds = time.gmtime(record.created)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", seconds)
        line: dict[str, Any] = {
            "time": f"{stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = record.__dict__
        for name in FIELDS:
            value = fields.get(name)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        # default=str: an odd extra value (a Path, an enum) is written, not lost.
        return orjson.dumps(line, default=str).decode()


def configure_logging(level: str, log_format: str = "text", stream: TextIO | None = None) -> None:
    """Send every log record of ``level`` and above to ``stream`` (stderr) in
    ``log_format`` (``text`` or ``json``); replaces handlers set up before."""
    if log_format not in FORMATS:
        raise ValueError(f"log format {log_format!r} is not one of {', '.join(FORMATS)}")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)
