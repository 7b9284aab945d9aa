"""The dashboard's routes: pages, the live fragments they poll, and the actions they post."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode

import msgspec
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tasqueue.control import JobState
from tasqueue.errors import BrokerError, NotFoundError, ResultsError
from tasqueue.inspector import ActionReport, Inspector, JobFilter, JobSummary, QueueInfo, WorkerInfo
from tasqueue_dashboard._cache import SharedCache
from tasqueue_dashboard._chart import Throughput, svg
from tasqueue_dashboard._preview import Formatter, preview
from tasqueue_dashboard._security import (
    CSRF_COOKIE,
    CSRF_FIELD,
    SECURITY_HEADERS,
    Access,
    AuthHook,
    access_of,
    csrf_ok,
    csrf_token,
    mask_secrets,
)

log = logging.getLogger("tasqueue.dashboard")
STATIC = Path(__file__).with_name("static")
STATES = list(JobState)
#: What each action takes, per state of a job list.
VERBS_BY_STATE = {
    JobState.QUEUED: ("delete",),
    JobState.DELAYED: ("run-now", "delete"),
    JobState.RUNNING: (),
    JobState.RETRYING: ("run-now", "delete"),
    JobState.SUCCESSFUL: ("delete",),
    JobState.FAILED: ("retry", "delete"),
}
#: Time filters of job lists: label -> seconds.
SINCE = {"5m": 300, "15m": 900, "1h": 3600, "24h": 86400, "7d": 7 * 86400}
PAGE_SIZES = (20, 50, 100, 200)
#: A "matching" count that would read more jobs than this (a task filter on a big state) says "up to".
EXACT_COUNT_LIMIT = 2_000
#: The most jobs a time-filtered bulk action gathers.
GATHER_LIMIT = 100_000
MAX_FORM = 1 << 20
# Results bigger than this are not loaded for a preview.
RESULT_PREVIEW_MAX = 1 << 20


@dataclass(frozen=True)
class Settings:
    read_only: bool
    auth: AuthHook | None
    formatter: Formatter | None
    title: str
    label: str
    refresh: float
    basic_realm: bool


class Overview(msgspec.Struct, frozen=True):
    queues: list[QueueInfo]
    workers: list[WorkerInfo]


class Dashboard:
    """The state one dashboard app holds: its Inspector, the shared cache and the throughput samples."""

    def __init__(self, inspector: Inspector, settings: Settings, cache_ttl: float) -> None:
        self.insp = inspector
        self.settings = settings
        self.cache = SharedCache(cache_ttl)
        self.throughput = Throughput()
        self.env = Environment(
            loader=PackageLoader("tasqueue_dashboard", "templates"),
            autoescape=select_autoescape(default=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["ago"] = _ago
        self.env.filters["when"] = _when
        self.env.filters["q"] = lambda v: quote(str(v), safe="")
        self.env.filters["mask"] = mask_secrets
        self.env.filters["short"] = lambda s, n=80: s if len(s) <= n else s[: n - 1] + "…"

    # ---- reading, through the shared cache ---------------------------------------------------

    async def overview(self) -> Overview:
        async def compute() -> Overview:
            queues = await self.insp.queues()
            workers = await self.insp.workers()
            self.throughput.add({q.name: (q.counts.total_successful, q.counts.total_failed) for q in queues})
            return Overview(queues, workers)

        return await self.cache.get("overview", compute)

    async def queue(self, name: str) -> QueueInfo:
        overview = await self.overview()
        for q in overview.queues:
            if q.name == name:
                return q
        return await self.cache.get(("queue", name), lambda: self.insp.queue(name))

    async def rows(self, f: ListFilter) -> tuple[list[JobSummary], str | None]:
        return await self.cache.get(("rows", f), lambda: self._rows(f))

    async def _rows(self, f: ListFilter) -> tuple[list[JobSummary], str | None]:
        """A page of ``f``: pages of a task filter are topped up (a few reads at most), a time filter stops at its edge."""
        rows: list[JobSummary] = []
        cursor = f.cursor
        cutoff = time.time() - SINCE[f.since] if f.since else None
        for _ in range(5):
            # Each read asks for no more than the page lacks, so the cursor never skips a match.
            page = await self.insp.jobs(
                f.queue, f.state, cursor=cursor, limit=f.limit - len(rows), task=f.task or None, newest_first=not f.oldest
            )
            cursor = page.cursor
            for row in page.jobs:
                at = _row_time(row)
                if cutoff is not None and (at is None or at < cutoff):
                    if not f.oldest:
                        return rows, None  # newest first: everything after is older still
                    continue
                rows.append(row)
            if cursor is None or len(rows) >= f.limit or not (f.task or f.since):
                break
        return rows, cursor

    # ---- rendering ---------------------------------------------------------------------------

    def render(self, request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        token, new = csrf_token(request)
        access: Access = request.scope.get("tasqueue_dashboard.access", "operator")
        base = _base(request)
        s = self.settings
        html = self.env.get_template(template).render(
            base=base,
            csrf=token,
            can_act=access == "operator" and not s.read_only,
            title=s.title,
            label=s.label,
            refresh_ms=int(s.refresh * 1000),
            note=request.query_params.get("note", ""),
            here=_here(request),
            states=STATES,
            **context,
        )
        response = HTMLResponse(html, status_code=status)
        if new:
            response.set_cookie(CSRF_COOKIE, token, path=base or "/", httponly=True, samesite="strict")
        return response

    # ---- pages -------------------------------------------------------------------------------

    async def page_overview(self, request: Request) -> Response:
        return self.render(request, "overview.html", **await self._overview_context())

    async def live_queues(self, request: Request) -> Response:
        return self.render(request, "_queues.html", **await self._overview_context())

    async def _overview_context(self) -> dict[str, Any]:
        o = await self.overview()
        totals = {s: sum(q.counts.get(s) for q in o.queues) for s in STATES}
        return {
            "overview": o,
            "totals": totals,
            "chart": svg(self.throughput.bars(), width=600, height=60, label="jobs finished, all queues, last 10 minutes"),
            "sparks": {q.name: svg(self.throughput.bars(q.name), width=150, height=24) for q in o.queues},
            "per_minute": self.throughput.per_minute(),
            "window_minutes": int(self.throughput.window // 60),
        }

    async def page_queue(self, request: Request) -> Response:
        return self.render(request, "queue.html", **await self._queue_context(request))

    async def live_queue(self, request: Request) -> Response:
        return self.render(request, "_jobs.html", **await self._queue_context(request))

    async def _queue_context(self, request: Request) -> dict[str, Any]:
        f = ListFilter.from_query(request.path_params["queue"], request.query_params)
        info = await self.queue(f.queue)
        rows, cursor = await self.rows(f)
        overview = await self.overview()
        return {
            "f": f,
            "info": info,
            "queue_names": sorted({q.name for q in overview.queues} | {f.queue}),
            "rows": rows,
            "next_url": f.url(cursor=cursor) if cursor else None,
            "first_url": f.url(cursor=None) if f.cursor else None,
            "verbs": VERBS_BY_STATE[f.state],
            "since_choices": list(SINCE),
            "page_sizes": PAGE_SIZES,
            "live_url": "/live" + f.url(),
        }

    async def filter_jobs(self, request: Request) -> Response:
        """The filter form's target: its queue field picks the queue page, the rest stays the query."""
        f = ListFilter.from_query(request.query_params.get("queue", ""), request.query_params)
        return RedirectResponse(_base(request) + f.url(cursor=None), status_code=303)

    async def page_job(self, request: Request) -> Response:
        return self.render(request, "job.html", **await self._job_context(request.path_params["job_id"]))

    async def live_job(self, request: Request) -> Response:
        return self.render(request, "_job.html", **await self._job_context(request.path_params["job_id"]))

    async def _job_context(self, job_id: str) -> dict[str, Any]:
        async def compute() -> dict[str, Any]:
            story = await self.insp.job(job_id)
            m = story.message
            result = None
            if story.result_size is not None and story.result_size <= RESULT_PREVIEW_MAX:
                try:
                    data = await self.insp.server.get_result(job_id)
                except NotFoundError:
                    data = None
                if data is not None:
                    result = preview(m, data, "result", self.settings.formatter)
            group = chain = None
            if m.group_id:
                with contextlib.suppress(NotFoundError):
                    group = await self.insp.server.get_group(m.group_id)
            if m.chain_id:
                with contextlib.suppress(NotFoundError):
                    chain = await self.insp.server.get_chain(m.chain_id)
            return {
                "story": story,
                "m": m,
                "payload": preview(m, m.job.payload, "payload", self.settings.formatter),
                "result": result,
                "group": group,
                "chain": chain,
                "verbs": VERBS_BY_STATE[story.state],
            }

        return await self.cache.get(("job", job_id), compute)

    async def page_group(self, request: Request) -> Response:
        group = await self.insp.server.get_group(request.path_params["group_id"])
        return self.render(request, "group.html", group=group)

    async def page_chain(self, request: Request) -> Response:
        chain = await self.insp.server.get_chain(request.path_params["chain_id"])
        return self.render(request, "chain.html", chain=chain)

    async def find(self, request: Request) -> Response:
        """A job id opens the job; a group or chain id opens that; else the search box says it found nothing."""
        wanted = request.query_params.get("id", "").strip()
        base = _base(request)
        if wanted:
            for kind, probe in (
                ("jobs", self.insp.job),
                ("groups", self.insp.server.get_group),
                ("chains", self.insp.server.get_chain),
            ):
                try:
                    await probe(wanted)
                except NotFoundError:
                    continue
                return RedirectResponse(f"{base}/{kind}/{quote(wanted, safe='')}", status_code=303)
        return self.render(request, "notfound.html", status=404, wanted=wanted)

    async def page_workers(self, request: Request) -> Response:
        return self.render(request, "workers.html", overview=await self.overview())

    async def live_workers(self, request: Request) -> Response:
        return self.render(request, "_workers.html", overview=await self.overview())

    async def page_schedules(self, request: Request) -> Response:
        schedules = await self.cache.get("schedules", self.insp.schedules)
        return self.render(request, "schedules.html", schedules=schedules)

    async def api_queues(self, request: Request) -> Response:
        o = await self.overview()
        return Response(msgspec.json.encode({"queues": o.queues, "workers": o.workers}), media_type="application/json")

    async def api_jobs(self, request: Request) -> Response:
        """A page of a job list as JSON, with the same filters as the page and the cursor of the next."""
        f = ListFilter.from_query(request.path_params["queue"], request.query_params)
        rows, cursor = await self.rows(f)
        return Response(msgspec.json.encode({"jobs": rows, "cursor": cursor}), media_type="application/json")

    # ---- actions -----------------------------------------------------------------------------

    async def act(self, request: Request) -> Response:
        verb = request.path_params["verb"]
        if verb not in ACTIONS:
            return PlainTextResponse(f"unknown action {verb!r}; actions: {', '.join(ACTIONS)}", status_code=404)
        body = await request.body()
        if len(body) > MAX_FORM:
            return PlainTextResponse("form too large", status_code=413)
        form = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
        fields = dict(form)
        if not csrf_ok(request, fields.get(CSRF_FIELD, "")):
            return PlainTextResponse(
                "CSRF check failed: reload the page and submit its form again (the token comes with the page)", status_code=403
            )
        if request.scope.get("tasqueue_dashboard.access") != "operator" or self.settings.read_only:
            return PlainTextResponse("this dashboard is read-only for you: actions are disabled", status_code=403)
        base = _base(request)
        back = _safe_next(fields.get("next", ""), base)
        try:
            note = await ACTIONS[verb](self, request, fields, [v for k, v in form if k == "ids"], back)
        except ValueError as exc:
            return self.render(request, "error.html", status=400, problem=str(exc), back=back)
        if isinstance(note, Response):
            return note
        client = request.client.host if request.client else "?"
        target = f"queue {fields['queue']}" if verb in ("purge", "pause", "resume") else fields.get("scope", "selected")
        log.info("dashboard action %s (%s) from %s: %s", verb, target, client, note)
        self.cache.clear()
        sep = "&" if "?" in back else "?"
        return RedirectResponse(f"{back}{sep}{urlencode({'note': note})}", status_code=303)

    async def _target(self, fields: dict[str, str], ids: list[str]) -> tuple[Sequence[str] | JobFilter, str]:
        """The jobs an action names: the ids ticked, or every job matching the list's filter."""
        if fields.get("scope") != "all":
            if not ids:
                msg = "no job selected: tick some jobs, or use the button for all that match"
                raise ValueError(msg)
            return ids, f"{len(ids)} selected job{'s' if len(ids) != 1 else ''}"
        f = ListFilter.from_fields(fields)
        if f.since:
            gathered = await self._gather(f)
            return gathered, f"{len(gathered)} {f.state.value} job(s) of {f.queue} from the last {f.since}"
        what = f"all {f.state.value} jobs of {f.queue}" + (f" with task {f.task}" if f.task else "")
        return JobFilter(f.queue, f.state, f.task or None), what

    async def _gather(self, f: ListFilter) -> list[str]:
        ids: list[str] = []
        g = msgspec.structs.replace(f, cursor=None, limit=1000, oldest=False)
        while len(ids) < GATHER_LIMIT:
            rows, cursor = await self._rows(g)
            ids += [r.id for r in rows]
            if cursor is None:
                break
            g = msgspec.structs.replace(g, cursor=cursor)
        return ids

    async def _count(self, target: Sequence[str] | JobFilter) -> str:
        if not isinstance(target, JobFilter):
            return str(len(target))
        whole = (await self.insp.queue(target.queue)).counts.get(target.state)
        if target.task is None:
            return str(whole)
        if whole > EXACT_COUNT_LIMIT:
            return f"up to {whole}"
        return str(await self.insp.count(target))

    def confirm(
        self,
        request: Request,
        *,
        verb: str,
        what: str,
        count: str,
        form: list[tuple[str, str]],
        back: str,
        typed: str = "",
        wrong: bool = False,
    ) -> Response:
        hidden = [(k, v) for k, v in form if k not in (CSRF_FIELD, "confirmed", "typed")]
        return self.render(
            request,
            "confirm.html",
            status=400 if wrong else 200,
            verb=verb,
            what=what,
            count=count,
            hidden=hidden,
            back=back,
            typed=typed,
            wrong=wrong,
        )


async def _retry(d: Dashboard, request: Request, fields: dict[str, str], ids: list[str], back: str) -> str | Response:
    return await _bulk(d, request, verb="retry", act=d.insp.retry, fields=fields, ids=ids, back=back, destructive=False)


async def _run_now(d: Dashboard, request: Request, fields: dict[str, str], ids: list[str], back: str) -> str | Response:
    return await _bulk(d, request, verb="run-now", act=d.insp.run_now, fields=fields, ids=ids, back=back, destructive=False)


async def _delete(d: Dashboard, request: Request, fields: dict[str, str], ids: list[str], back: str) -> str | Response:
    return await _bulk(d, request, verb="delete", act=d.insp.delete, fields=fields, ids=ids, back=back, destructive=True)


async def _bulk(
    d: Dashboard,
    request: Request,
    *,
    verb: str,
    act: Callable[[Sequence[str] | JobFilter], Awaitable[ActionReport]],
    fields: dict[str, str],
    ids: list[str],
    back: str,
    destructive: bool,
) -> str | Response:
    target, what = await d._target(fields, ids)
    # Deleting anything, or acting on everything that matches, is confirmed first with a count.
    if (destructive or isinstance(target, JobFilter) or fields.get("scope") == "all") and fields.get("confirmed") != "1":
        form = [(k, v) for k, v in parse_qsl((await request.body()).decode(), keep_blank_values=True)]
        return d.confirm(request, verb=verb, what=what, count=await d._count(target), form=form, back=back)
    report = await act(target)
    done = {"retry": "retried", "run-now": "made ready", "delete": "deleted"}[verb]
    return _summary(done, report)


async def _purge(d: Dashboard, request: Request, fields: dict[str, str], ids: list[str], back: str) -> str | Response:
    queue = fields.get("queue", "")
    if not queue:
        msg = "purge needs a queue"
        raise ValueError(msg)
    if fields.get("confirmed") != "1" or fields.get("typed", "") != queue:
        form = parse_qsl((await request.body()).decode(), keep_blank_values=True)
        info = await d.insp.queue(queue)
        count = sum(info.counts.get(s) for s in STATES if s is not JobState.RUNNING)
        # A name typed wrong asks again (400), deleting nothing.
        wrong = fields.get("confirmed") == "1"
        what = f"every job of queue {queue} (all but running)"
        return d.confirm(request, verb="purge", what=what, count=str(count), form=form, back=back, typed=queue, wrong=wrong)
    return _summary("purged", await d.insp.purge(queue))


async def _pause(d: Dashboard, request: Request, fields: dict[str, str], ids: list[str], back: str) -> str | Response:
    queue = _queue_field(fields)
    await d.insp.pause(queue)
    return f"paused {queue}: workers stop fetching from it within a heartbeat"


async def _resume(d: Dashboard, request: Request, fields: dict[str, str], ids: list[str], back: str) -> str | Response:
    queue = _queue_field(fields)
    await d.insp.resume(queue)
    return f"resumed {queue}"


def _queue_field(fields: dict[str, str]) -> str:
    queue = fields.get("queue", "")
    if not queue:
        msg = "this action needs a queue"
        raise ValueError(msg)
    return queue


def _summary(done: str, report: ActionReport) -> str:
    text = f"{done} {report.done} of {report.matched} job{'s' if report.matched != 1 else ''}"
    if report.skipped:
        text += f"; {len(report.skipped)} skipped (not in a state this action takes)"
    return text


ActionFn = Callable[[Dashboard, Request, dict[str, str], list[str], str], Awaitable["str | Response"]]
ACTIONS: dict[str, ActionFn] = {
    "retry": _retry,
    "run-now": _run_now,
    "delete": _delete,
    "purge": _purge,
    "pause": _pause,
    "resume": _resume,
}


class ListFilter(msgspec.Struct, frozen=True, kw_only=True):
    """A job list's query: which queue, state, task and time, where the page starts, how long it is."""

    queue: str
    state: JobState = JobState.QUEUED
    task: str = ""
    since: str = ""
    cursor: str | None = None
    limit: int = 50
    oldest: bool = False

    @classmethod
    def from_query(cls, queue: str, q: Any) -> ListFilter:
        return cls.from_fields({**dict(q), "queue": queue})

    @classmethod
    def from_fields(cls, fields: dict[str, str]) -> ListFilter:
        queue = fields.get("queue", "")
        if not queue:
            msg = "no queue given"
            raise ValueError(msg)
        try:
            state = JobState(fields.get("state") or "queued")
        except ValueError:
            msg = f"unknown state {fields.get('state')!r}; states: {', '.join(s.value for s in STATES)}"
            raise ValueError(msg) from None
        since = fields.get("since", "")
        if since and since not in SINCE:
            msg = f"unknown time filter {since!r}; choose one of {', '.join(SINCE)}"
            raise ValueError(msg)
        try:
            limit = int(fields.get("limit") or 50)
        except ValueError:
            limit = 50
        return cls(
            queue=queue,
            state=state,
            task=fields.get("task", "").strip(),
            since=since,
            cursor=fields.get("cursor") or None,
            limit=min(max(limit, 1), max(PAGE_SIZES)),
            oldest=fields.get("order") == "oldest",
        )

    def query(self, **change: Any) -> dict[str, str]:
        f = msgspec.structs.replace(self, **change)
        q = {"state": f.state.value, "task": f.task, "since": f.since, "cursor": f.cursor or "", "limit": str(f.limit)}
        if f.oldest:
            q["order"] = "oldest"
        return {k: v for k, v in q.items() if v and not (k == "limit" and v == "50")}

    def url(self, **change: Any) -> str:
        q = self.query(**change)
        return f"/queues/{quote(self.queue, safe='')}" + (f"?{urlencode(q)}" if q else "")


def _row_time(row: JobSummary) -> float | None:
    at = row.at or row.enqueued_at
    return at.timestamp() if at is not None else None


def _base(request: Request) -> str:
    """The path the dashboard is mounted at (``""`` at the root)."""
    root: str = request.scope.get("root_path", "")
    return root.rstrip("/")


def _here(request: Request) -> str:
    """This page's URL below the mount point, without a note from a previous action."""
    base = _base(request)
    query = [(k, v) for k, v in request.query_params.multi_items() if k != "note"]
    path = request.url.path
    if base and path.startswith(base):
        path = path[len(base) :]
    if path.startswith("/live/"):
        path = path[len("/live") :]
    return base + path + (f"?{urlencode(query)}" if query else "")


def _safe_next(value: str, base: str) -> str:
    """Where an action returns: a path of this dashboard, never another site."""
    if value.startswith("/") and not value.startswith("//") and "\\" not in value and (not base or value.startswith(base)):
        return value
    return base + "/"


def _ago(value: datetime | float | None, now: float | None = None) -> str:
    if value is None:
        return "-"
    at = value.timestamp() if isinstance(value, datetime) else value
    delta = (now if now is not None else time.time()) - at
    future = delta < 0
    delta = abs(delta)
    if delta < 1:
        text = "now"
        return text
    if delta < 60:
        text = f"{int(delta)}s"
    elif delta < 3600:
        text = f"{int(delta // 60)}m{int(delta % 60):02d}s"
    elif delta < 86400:
        text = f"{int(delta // 3600)}h{int(delta % 3600 // 60):02d}m"
    else:
        text = f"{int(delta // 86400)}d{int(delta % 86400 // 3600)}h"
    return f"in {text}" if future else f"{text} ago"


def _when(value: datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") + "Z"


# ---- the ASGI app ----------------------------------------------------------------------------


class _Guard:
    """Checks access on every request but ``/health``, and puts the security headers on every answer."""

    def __init__(self, app: ASGIApp, dashboard: Dashboard) -> None:
        self.app = app
        self.dashboard = dashboard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                headers += [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items() if k.encode() not in present]
                message = {**message, "headers": headers}
            await send(message)

        scope = _with_mount_point(scope)
        request = Request(scope)
        if _route_path(scope) != "/health":
            access = await access_of(self.dashboard.settings.auth, request)
            if access is None:
                if self.dashboard.settings.basic_realm:
                    response: Response = PlainTextResponse(
                        "sign in to see this dashboard", status_code=401, headers={"www-authenticate": 'Basic realm="tasqueue"'}
                    )
                else:
                    response = PlainTextResponse("not allowed to see this dashboard", status_code=403)
                await response(scope, receive, send_with_headers)
                return
            scope["tasqueue_dashboard.access"] = access
        await self.app(scope, receive, send_with_headers)


def _route_path(scope: Scope) -> str:
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def _with_mount_point(scope: Scope) -> Scope:
    """The scope with its mount point in ``root_path``, as Starlette's routing and our links expect.

    Starlette and FastAPI mounts set ``root_path`` and keep the whole ``path``; a Litestar mount
    strips its prefix from ``path`` (adding a slash) and leaves ``root_path`` empty, so the prefix
    is recovered from ``raw_path``.
    """
    raw = scope.get("raw_path")
    if scope.get("root_path") or not raw:
        return scope
    full = unquote(raw.decode("latin-1").partition("?")[0])
    stripped = scope["path"].rstrip("/")
    if full.rstrip("/") == stripped or not full.rstrip("/").endswith(stripped):
        return scope
    base = full.rstrip("/")[: len(full.rstrip("/")) - len(stripped)].rstrip("/")
    if not base:
        return scope
    return {**scope, "root_path": base, "path": full}


async def _not_found(request: Request, exc: Exception) -> Response:
    dashboard: Dashboard = request.app.state.dashboard
    return dashboard.render(request, "notfound.html", status=404, wanted="", problem=mask_secrets(str(exc)))


async def _unavailable(request: Request, exc: Exception) -> Response:
    # A backend that fails is the operator's news, not a stack trace; passwords stay hidden.
    dashboard: Dashboard = request.app.state.dashboard
    problem = f"the backend did not answer: {mask_secrets(str(exc))}"
    return dashboard.render(request, "error.html", status=503, problem=problem, back="")


async def _bad_request(request: Request, exc: Exception) -> Response:
    dashboard: Dashboard = request.app.state.dashboard
    return dashboard.render(request, "error.html", status=400, problem=mask_secrets(str(exc)), back="")


def build(dashboard: Dashboard) -> ASGIApp:
    d = dashboard

    async def health(request: Request) -> Response:
        return PlainTextResponse("ok")

    routes = [
        Route("/", d.page_overview),
        Route("/live/queues", d.live_queues),
        Route("/queues/{queue}", d.page_queue),
        Route("/live/queues/{queue}", d.live_queue),
        Route("/jobs", d.filter_jobs),
        Route("/jobs/{job_id}", d.page_job),
        Route("/live/jobs/{job_id}", d.live_job),
        Route("/groups/{group_id}", d.page_group),
        Route("/chains/{chain_id}", d.page_chain),
        Route("/find", d.find),
        Route("/workers", d.page_workers),
        Route("/live/workers", d.live_workers),
        Route("/schedules", d.page_schedules),
        Route("/actions/{verb}", d.act, methods=["POST"]),
        Route("/api/queues", d.api_queues),
        Route("/api/queues/{queue}/jobs", d.api_jobs),
        Route("/health", health),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={
            NotFoundError: _not_found,
            ValueError: _bad_request,
            BrokerError: _unavailable,
            ResultsError: _unavailable,
        },
    )
    app.state.dashboard = d
    return _Guard(app, d)
