"""The web dashboard: server-rendered pages of the broker this process runs.

Pages (all GET, :data:`~osqueue_io.http.access.READ`): queues with their depths and a
live throughput chart (``/``; the chart polls ``/api/overview``), jobs with filters and
paging (``/jobs``), one job (``/job?id=``, from the state, or from an archive object),
dead letters (``/dead``), the archive by time bucket (``/archive``,
``/archive/bucket?name=``) and the broker (``/broker``).

On a scale-out group member (:class:`~osqueue_io.http.group_monitor.GroupMonitor`) the
queue pages show the queues it serves, each from the runtime of its own queue: the jobs
and dead-letter pages show one queue at a time (the first it serves unless one is named),
a queue another member serves is answered 409 naming that member, ``/group`` shows the
members and every queue's owner (``/broker`` leads there), and the archive pages read
one queue's archive at a time (``?queue=``: each queue keeps its own). Two POST endpoints
(:data:`~osqueue_io.http.access.ADMIN`), ``/dead/redrive`` and ``/dead/purge``, send
``Redrive`` and ``Purge`` through the broker runtime exactly as the gRPC service does:
the core checks, batches and commits them; the page reports the result or the typed
error. Forms are guarded by :mod:`osqueue_io.http.csrf`.

Templates autoescape every value (job ids, queue names, errors, worker ids are all
untrusted); the only script is the chart's, a static file. Every list is bounded: pages
of at most 500 jobs or dead letters, 24 archive hours per page, and the archive reads of
:mod:`osqueue_io.http.archive`.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import jinja2
from aiohttp import web

from osqueue_core import (
    JOB_FILTERS,
    MAX_JOBS_PAGE,
    BrokerConfig,
    BrokerStats,
    DeadLetters,
    GetJob,
    JobInfo,
    ListDead,
    OsqueueError,
    Phase,
    Purge,
    Purged,
    Redrive,
    Redriven,
    quote,
)
from osqueue_io.group.layout import job_queue
from osqueue_io.http import archive, params
from osqueue_io.http.access import admin_route, read_route
from osqueue_io.http.csrf import TOKEN_FIELD, FormGuard
from osqueue_io.http.group_monitor import GroupMonitor
from osqueue_io.http.monitor import Monitor
from osqueue_io.http.params import BadRequest
from osqueue_io.runtime import BrokerRuntime

#: Rows per page unless the request asks for another number (at most MAX_JOBS_PAGE).
DEFAULT_PAGE = 50
#: The archive overview goes back at most this many hours.
MAX_HOURS_AGO = 24 * 400

#: An HTTP status for each gRPC status a typed error carries.
HTTP_STATUS = {
    "INVALID_ARGUMENT": 400,
    "NOT_FOUND": 404,
    "FAILED_PRECONDITION": 409,
    "ABORTED": 409,
    "RESOURCE_EXHAUSTED": 429,
    "UNAVAILABLE": 503,
    "CANCELLED": 503,
}


def _time(value: float | None) -> str:
    if value is None:
        return ""
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _age(seconds: float | None) -> str:
    if seconds is None:
        return ""
    whole = max(0, int(seconds))
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{days}d"] if days else []
    if hours or days:
        parts.append(f"{hours}h")
    if minutes or hours or days:
        parts.append(f"{minutes}m")
    parts.append(f"{secs}s")
    return " ".join(parts[:2])


def templates() -> jinja2.Environment:
    """The dashboard's templates, every value autoescaped."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("osqueue_io.http", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["time"] = _time
    env.filters["age"] = _age
    env.globals["query"] = lambda **items: urlencode(
        {k: v for k, v in items.items() if v not in (None, "")}
    )
    return env


def overview(stats: BrokerStats | None, operations: float, commits: int) -> dict[str, Any]:
    """What ``/api/overview`` answers: depths per queue and the cumulative counters
    the chart differentiates into rates."""
    wall = time.time()
    queues = []
    if stats is not None:
        for q in stats.queues:
            since = q.oldest_ready_since
            queues.append(
                {
                    "queue": q.queue,
                    "ready": q.ready,
                    "delayed": q.delayed,
                    "claimed": q.claimed,
                    "dead": q.dead,
                    "oldest_ready_age": None if since is None else max(0.0, wall - since),
                }
            )
    return {
        "time": wall,
        "phase": None if stats is None else stats.phase.value,
        "queues": queues,
        "pending_archive": 0 if stats is None else stats.finished_pending_archive,
        "operations": operations,
        "commits": commits,
    }


class Dashboard:
    """The pages and actions above, for ``monitor``'s broker (or group member)."""

    def __init__(self, monitor: Monitor, guard: FormGuard | None = None) -> None:
        self.monitor = monitor
        self.guard = guard or FormGuard()
        self._env = templates()

    def routes(self) -> list[web.RouteDef]:
        member = [read_route("/group", self.group, name="group")] if self._member() else []
        return [
            *member,
            read_route("/", self.queues, name="queues"),
            read_route("/api/overview", self.api_overview),
            read_route("/jobs", self.jobs, name="jobs"),
            read_route("/job", self.job, name="job"),
            read_route("/dead", self.dead, name="dead"),
            read_route("/archive", self.archive, name="archive"),
            read_route("/archive/bucket", self.bucket, name="bucket"),
            read_route("/broker", self.broker, name="broker"),
            admin_route("/dead/redrive", self.redrive),
            admin_route("/dead/purge", self.purge),
        ]

    # -- rendering -------------------------------------------------------------------

    def render(self, name: str, http_status: int = 200, **values: Any) -> web.Response:
        stats = values.pop("stats", None) or self.monitor.stats()
        member = self._member()
        page = self._env.get_template(name).render(
            stats=stats,
            identity=self.monitor.identity,
            member=None
            if member is None
            else {"served": list(member.serving()), "of": len(member.queues)},
            csrf_field=TOKEN_FIELD,
            csrf_token=self.guard.token,
            **values,
        )
        return web.Response(
            text=page, status=http_status, content_type="text/html", charset="utf-8"
        )

    def error_page(self, status: int, message: str) -> web.Response:
        return self.render("error.html", http_status=status, status_code=status, message=message)

    def _member(self) -> GroupMonitor | None:
        return self.monitor if isinstance(self.monitor, GroupMonitor) else None

    async def _runtime(self, queue: str | None = None) -> BrokerRuntime:
        """The runtime serving ``queue`` (a single broker's serves every queue)."""
        return await self.monitor.runtime_for(queue)

    def _archive_of(self, queue: str | None) -> tuple[str | None, BrokerConfig]:
        """Whose archive a page reads, and its configuration: the broker's; on a group
        member, ``queue``'s (each queue keeps its own under ``queues/<queue>/archive/``,
        readable whoever serves it; default: the first this member serves, else the
        group's first)."""
        member = self._member()
        if member is None:
            return None, self.monitor.config
        if queue is None:
            queue = member.home_queue() or member.queues[0]
        monitor = member.monitors.get(queue)
        if monitor is None:
            raise BadRequest(f"queue {quote(queue)} is not one of this group's queues", 404)
        return queue, monitor.config

    # -- pages -----------------------------------------------------------------------

    async def queues(self, request: web.Request) -> web.StreamResponse:
        """Queues with their depths, and the live throughput chart."""
        stats = self.monitor.stats()
        now = time.time()
        return self.render("queues.html", stats=stats, now=now)

    async def api_overview(self, request: web.Request) -> web.StreamResponse:
        stats = self.monitor.stats()
        counters = self.monitor.counters(self.monitor.runtime_stats())
        body = overview(stats, counters.commit_operations.total, counters.commit_operations.count)
        return web.json_response(body, headers={"Cache-Control": "no-store"})

    async def jobs(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        queue = params.queue(query) or self.monitor.home_queue()
        status = params.choice(query, "status", JOB_FILTERS)
        after = params.number(query, "after", 0, 2**53, -1)
        limit = params.number(query, "limit", 1, MAX_JOBS_PAGE, DEFAULT_PAGE)
        page = (await self._runtime(queue)).jobs(
            queue=queue, status=status, after=None if after < 0 else after, limit=limit
        )
        return self.render(
            "jobs.html",
            page=page,
            queue=queue,
            status=status,
            limit=limit,
            filters=JOB_FILTERS,
        )

    async def job(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        job_id = params.job_id(query, "id")
        key = params.text(query, "archive", 512)
        if key is not None:
            try:
                _, config = self._archive_of(job_queue(job_id) if self._member() else None)
                archived = await archive.archived_job(self.monitor.store, config, key, job_id)
            except ValueError as error:
                raise BadRequest(str(error)) from None
            except LookupError as error:
                raise BadRequest(str(error), 404) from None
            return self.render("job.html", job_id=job_id, info=None, job=archived, key=key)
        runtime = await self._runtime(job_queue(job_id))
        info = await runtime.request(GetJob(runtime.new_request_id(), job_id))
        assert isinstance(info, JobInfo)
        return self.render("job.html", job_id=job_id, info=info, job=runtime.job(job_id), key=None)

    async def dead(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        queue = params.queue(query) or self.monitor.home_queue()
        after = params.text(query, "after", 256)
        limit = params.number(query, "limit", 1, MAX_JOBS_PAGE, DEFAULT_PAGE)
        runtime = await self._runtime(queue)
        page = await runtime.request(ListDead(runtime.new_request_id(), queue, limit, after))
        assert isinstance(page, DeadLetters)
        return self.render(
            "dead.html",
            page=page,
            queue=queue,
            limit=limit,
            redriven=params.number(query, "redriven", 0, 10**6, -1),
            purged=params.number(query, "purged", 0, 10**6, -1),
        )

    async def archive(self, request: web.Request) -> web.StreamResponse:
        hours_ago = params.number(request.query, "hours_ago", 0, MAX_HOURS_AGO, 0)
        queue, config = self._archive_of(params.queue(request.query))
        names = archive.recent_buckets(config, time.time(), hours_ago)
        buckets = await archive.count_buckets(self.monitor.store, config, names)
        return self.render(
            "archive.html",
            queue=queue,
            queues=self._group_queues(),
            buckets=buckets,
            hours_ago=hours_ago,
            step=archive.HOURS_PER_PAGE,
            max_hours_ago=MAX_HOURS_AGO,
            counted=archive.MAX_COUNTED,
        )

    async def bucket(self, request: web.Request) -> web.StreamResponse:
        name = params.text(request.query, "name", 64)
        if name is None or not archive.BUCKET_NAME.fullmatch(name):
            raise BadRequest("name must be an archive bucket, e.g. 2026-12-01T17")
        queue, config = self._archive_of(params.queue(request.query))
        found = await archive.bucket_jobs(self.monitor.store, config, name)
        return self.render("bucket.html", bucket=name, found=found, queue=queue)

    def _group_queues(self) -> list[str]:
        """A group member's queues (its archive pages choose one); none on a broker."""
        member = self._member()
        return [] if member is None else list(member.queues)

    async def broker(self, request: web.Request) -> web.StreamResponse:
        if self._member():
            raise web.HTTPSeeOther("/group")
        return self.render("broker.html", running=Phase.RUNNING, **self._process())

    async def group(self, request: web.Request) -> web.StreamResponse:
        """A group member: the members, every queue's owner, this member's counters."""
        member = self._member()
        assert member is not None  # the route exists on members only
        view = await member.group()
        return self.render("group.html", view=view, **self._process())

    def _process(self) -> dict[str, Any]:
        """What the broker and group pages say about this process."""
        monitor = self.monitor
        return {
            "address": monitor.address,
            "store_url": monitor.store.url,
            "config": monitor.config,
            "counters": monitor.counters(monitor.runtime_stats()).values,
        }

    # -- actions ---------------------------------------------------------------------

    async def _dead_action(self, request: web.Request, purge: bool) -> web.StreamResponse:
        if request.content_length is not None and request.content_length > 4096:
            raise BadRequest("the form is too large", 413)
        form = await request.post()
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        refusal = self.guard.refusal(request, fields.get(TOKEN_FIELD))
        if refusal is not None:
            raise BadRequest(refusal, 403)
        queue = params.queue(fields)
        back = params.queue(fields, "back")
        if queue is not None:
            job_ids: tuple[str, ...] = ()
            runtime = await self._runtime(queue)
        else:
            job_ids = (params.job_id(fields),)
            runtime = await self._runtime(job_queue(job_ids[0]))
        kind = Purge if purge else Redrive
        result = await runtime.request(kind(runtime.new_request_id(), job_ids, queue))
        assert isinstance(result, Purged | Redriven)
        done = "purged" if purge else "redriven"
        location = "/dead?" + urlencode(
            {k: v for k, v in (("queue", back), (done, len(result.job_ids))) if v is not None}
        )
        raise web.HTTPSeeOther(location)

    async def redrive(self, request: web.Request) -> web.StreamResponse:
        """Dead letters back to ready: one (``job_id``) or a queue's (``queue``)."""
        return await self._dead_action(request, purge=False)

    async def purge(self, request: web.Request) -> web.StreamResponse:
        """Dead letters to the archive: one (``job_id``) or a queue's (``queue``)."""
        return await self._dead_action(request, purge=True)


def error_status(error: OsqueueError) -> int:
    """The HTTP status a typed error from the broker is answered with."""
    return HTTP_STATUS.get(error.grpc_status, 500)
