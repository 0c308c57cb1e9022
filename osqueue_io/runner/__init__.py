"""The worker runner: claim jobs and run a handler on each, with heartbeats, retries and
a graceful stop.

In a program, :func:`run_worker` (``osqueue_io.run_worker``) drives any
:class:`~osqueue_io.client.JobQueue`; on the command line, ``python -m osqueue_io.worker
module:function --data URL`` (or ``--broker HOST:PORT``) runs one
(:mod:`osqueue_io.runner.cli`). docs/lifecycle.md, "The worker runner", describes both.
"""

from osqueue_io.runner.handler import Handler, is_async_handler, job_result
from osqueue_io.runner.outcomes import RunSummary
from osqueue_io.runner.run import MAX_GRACE, run_worker

__all__ = ["MAX_GRACE", "Handler", "RunSummary", "is_async_handler", "job_result", "run_worker"]
