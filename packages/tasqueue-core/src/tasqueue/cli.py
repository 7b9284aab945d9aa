"""The ``tasqueue`` command: run workers, and read and act on queues, jobs and workers.

    tasqueue worker myapp.tasks:srv --processes 4        # a supervisor and 4 worker processes
    tasqueue queues                                      # counts per state, per queue
    tasqueue jobs --queue emails --state failed          # a page of jobs (newest first)
    tasqueue job ID / result ID / payload ID             # one job's story; its result or payload bytes
    tasqueue retry --queue emails                        # every failed job of a queue, again
    tasqueue top                                         # a live view (pip install 'tasqueue-core[cli]')

Every command but ``worker`` reaches the backends from ``--broker``/``--results``, else
``TASQUEUE_BROKER``/``TASQUEUE_RESULTS``, else the app named by ``-A module:srv``; all reads and
actions go through ``tasqueue.Inspector``. Errors are one line on stderr; the exit status says
which kind (see ``EXIT_*``).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from tasqueue import _loop
from tasqueue import _output as out
from tasqueue._loop import LOOPS
from tasqueue.control import JobState
from tasqueue.errors import BrokerError, NotFoundError, ResultsError, TasqueueError
from tasqueue.inspector import Inspector, JobFilter
from tasqueue.jobs import DEFAULT_QUEUE, Job, JobOpts
from tasqueue.server import Server
from tasqueue.tasks import QueueConfig

__all__ = ["EXIT_ERROR", "EXIT_NOT_FOUND", "EXIT_UNREACHABLE", "EXIT_USAGE", "load_server", "main"]

BROKER_ENV = "TASQUEUE_BROKER"
RESULTS_ENV = "TASQUEUE_RESULTS"
APP_ENV = "TASQUEUE_APP"
DEBUG_ENV = "TASQUEUE_DEBUG"

#: Exit statuses: 0 done, 1 an error, 2 bad usage, 3 no such job/result, 4 a backend unreachable or failing.
EXIT_ERROR, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_UNREACHABLE = 1, 2, 3, 4


class CliError(Exception):
    """A mistake on the command line, reported as one line on stderr."""


# ---- the app and the backends ----------------------------------------------------------------


def load_server(spec: str) -> Server:
    """Import ``module:attribute`` (the attribute may be dotted) and return the Server it names.

    The current directory is put on ``sys.path`` first, so ``tasqueue worker app:srv`` finds
    ``./app.py`` the way ``python -c "import app"`` would.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        msg = f"expected module:attribute, e.g. myapp.tasks:srv, got {spec!r}"
        raise CliError(msg)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # Only a missing module *named on the command line* is a usage error; an import that
        # fails inside the user's module is a bug there and keeps its traceback.
        if exc.name is None or not (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise
        msg = f"cannot import module {module_name!r} (from {os.getcwd()}): {exc}"
        raise CliError(msg) from None
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            msg = f"module {module_name!r} has no attribute {attr!r}"
            raise CliError(msg) from None
    if not isinstance(obj, Server):
        msg = f"{spec} is a {type(obj).__name__}, not a tasqueue.Server"
        raise CliError(msg)
    return obj


def _connect(args: argparse.Namespace) -> Server:
    """The Server a command works through: from the URLs given, else the environment, else the app."""
    broker = args.broker or os.environ.get(BROKER_ENV)
    results = args.results or os.environ.get(RESULTS_ENV)
    app = args.app or (None if broker or results else os.environ.get(APP_ENV))
    if app and not (args.broker or args.results):
        return load_server(app)
    broker = broker or results or "memory://"
    for url, flag in ((broker, "broker"), (results or broker, "results")):
        parts = urlsplit(url)
        if parts.scheme == "memory" and not (parts.netloc or parts.path.strip("/")):
            print(
                f"note: {url} lives inside one process, so this command sees it empty; give --{flag} "
                f"(or {BROKER_ENV if flag == 'broker' else RESULTS_ENV}) a shared backend such as redis://, or -A module:srv",
                file=sys.stderr,
            )
            break
    # Without a results URL the Server keeps results on the broker's backend when it has a store.
    return Server(broker, results)


Command = Callable[[Inspector, argparse.Namespace], Awaitable[int]]


def _inspect(command: Command) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        async def go() -> int:
            srv = _connect(args)
            try:
                return await command(Inspector(srv), args)
            finally:
                await srv.close()

        return asyncio.run(go())

    return run


def _write(text: str) -> None:
    sys.stdout.write(text + "\n")


def _write_bytes(data: bytes) -> None:
    sys.stdout.flush()
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def _confirm(args: argparse.Namespace, count: int, what: str) -> None:
    """Ask before touching more than one job, unless ``--yes``; raise ``CliError`` on no."""
    if count <= 1 or args.yes:
        return
    if not sys.stdin.isatty():
        msg = f"{what} would touch {count} jobs; add --yes to confirm (there is no terminal to ask on)"
        raise CliError(msg)
    sys.stderr.write(f"{what}: {count} jobs. Continue? [y/N] ")
    sys.stderr.flush()
    if input().strip().lower() not in {"y", "yes"}:
        msg = "aborted; nothing changed"
        raise CliError(msg)


# ---- reading ---------------------------------------------------------------------------------

_STATES = [s.value for s in JobState]


async def _queues(insp: Inspector, args: argparse.Namespace) -> int:
    queues = await insp.queues()
    if args.json:
        _write(out.to_json(queues))
        return 0
    rows = [[q.name, *(q.counts.get(s) for s in JobState), q.workers, "paused" if q.paused else "active"] for q in queues]
    _write(out.table(["QUEUE", *(s.upper() for s in _STATES), "WORKERS", "STATE"], rows))
    return 0


async def _jobs(insp: Inspector, args: argparse.Namespace) -> int:
    page = await insp.jobs(
        args.queue, JobState(args.state), cursor=args.cursor, limit=args.limit, newest_first=not args.oldest, task=args.task
    )
    if args.json:
        _write(out.to_json(page))
        return 0
    rows = [
        [j.id, j.task, j.status, f"{j.retried}/{j.max_retry}", out.size(j.payload_size), out.clock(j.at), j.error or "-"]
        for j in page.jobs
    ]
    _write(out.table(["ID", "TASK", "STATUS", "RETRIED", "PAYLOAD", "AT", "ERROR"], rows))
    if page.cursor is not None:
        print(f"more: --cursor {page.cursor}", file=sys.stderr)
    return 0


async def _job(insp: Inspector, args: argparse.Namespace) -> int:
    story = await insp.job(args.id)
    m = story.message
    truncated = story.payload_size > out.PREVIEW and not args.full
    if args.json:
        doc = out.plain(m, full=args.full)
        doc.update(
            state=story.state.value,
            payload_size=story.payload_size,
            payload_truncated=truncated,
            result_size=story.result_size,
            traceback=story.traceback,
        )
        _write(out.to_json(doc))
        return 0
    shown = out.preview(m.job.payload, args.full)
    payload = shown if isinstance(shown, str) else f"base64:{shown['base64']}"
    lines = [
        ("id", m.id),
        ("task", m.job.task),
        ("queue", m.queue),
        ("state", f"{story.state.value} (status {m.status.value})"),
        ("attempts", f"retried {m.retried} of {m.max_retry}" + (f", {m.stalls} worker deaths" if m.stalls else "")),
        ("enqueued", out.clock(m.enqueued_at)),
        ("started", out.clock(m.processed_at)),
        ("eta", out.clock(m.job.opts.eta)),
        ("error", m.prev_err or "-"),
        ("result", out.size(story.result_size)),
        (
            "payload",
            out.size(story.payload_size) + (" (preview below; --full or `tasqueue payload ID` for all)" if truncated else ""),
        ),
    ]
    if m.schedule_id:
        lines.append(("schedule", f"{m.schedule_id} ({m.schedule})"))
    for name in ("group_id", "chain_id"):
        if getattr(m, name):
            lines.append((name.replace("_id", ""), getattr(m, name)))
    width = max(len(k) for k, _ in lines)
    _write("\n".join(f"{k.ljust(width)}  {v}" for k, v in lines))
    _write("")
    _write(payload if args.full else out.one_line(payload, out.PREVIEW + 16))
    if story.traceback:
        _write("\ntraceback of the last failure:\n" + story.traceback.rstrip())
    return 0


async def _payload(insp: Inspector, args: argparse.Namespace) -> int:
    _write_bytes((await insp.job(args.id)).message.job.payload)
    return 0


async def _result(insp: Inspector, args: argparse.Namespace) -> int:
    data = await insp.server.get_result(args.id)
    if args.json:
        _write(out.to_json({"id": args.id, "size": len(data), "result": data}))
    else:
        _write_bytes(data)
    return 0


async def _workers(insp: Inspector, args: argparse.Namespace) -> int:
    workers = await insp.workers()
    if args.json:
        _write(out.to_json(workers))
        return 0
    now = datetime.now(UTC)
    rows = []
    for w in workers:
        busy = sum(len(v) for v in w.in_flight.values())
        queues = ",".join(f"{q}{' (paused)' if q in w.paused else ''}" for q in w.queues)
        rows.append(
            [
                w.id[:8],
                w.host,
                w.pid,
                f"{busy}/{sum(w.queues.values())}",
                out.ago(w.started, now),
                out.ago(w.heartbeat, now),
                queues,
            ]
        )
    _write(out.table(["WORKER", "HOST", "PID", "BUSY", "UP", "BEAT", "QUEUES"], rows))
    return 0


async def _schedules(insp: Inspector, args: argparse.Namespace) -> int:
    schedules = await insp.schedules()
    if args.json:
        _write(out.to_json(schedules))
        return 0
    rows = [[s.id, s.task, s.queue, s.cron, f"{out.clock(s.next_run)} ({out.ago(s.next_run)})"] for s in schedules]
    _write(out.table(["SCHEDULE", "TASK", "QUEUE", "CRON", "NEXT RUN"], rows))
    return 0


# ---- acting ----------------------------------------------------------------------------------


def _target(args: argparse.Namespace, state: JobState | None) -> Sequence[str] | JobFilter:
    if args.ids:
        if args.queue or getattr(args, "task", None):
            msg = "give job ids, or --queue (and --task) to select jobs, not both"
            raise CliError(msg)
        return list(args.ids)
    if not args.queue:
        msg = "give job ids, or --queue to act on every matching job of a queue"
        raise CliError(msg)
    chosen = JobState(args.state) if getattr(args, "state", None) else state
    if chosen is None:
        msg = "give --state with --queue"
        raise CliError(msg)
    return JobFilter(args.queue, chosen, getattr(args, "task", None))


def _report(args: argparse.Namespace, verb: str, report: Any) -> int:
    if args.json:
        _write(out.to_json(report))
    else:
        _write(
            f"{verb} {report.done} of {report.matched} job(s)" + (f"; skipped {len(report.skipped)}" if report.skipped else "")
        )
        for job_id in report.skipped[:20]:
            print(f"skipped {job_id}", file=sys.stderr)
    return 0


async def _retry(insp: Inspector, args: argparse.Namespace) -> int:
    target = _target(args, JobState.FAILED)
    _confirm(args, await insp.count(target), "retry")
    return _report(args, "retried", await insp.retry(target))


async def _run_now(insp: Inspector, args: argparse.Namespace) -> int:
    target = _target(args, JobState.DELAYED)
    _confirm(args, await insp.count(target), "run now")
    return _report(args, "made ready", await insp.run_now(target))


async def _delete(insp: Inspector, args: argparse.Namespace) -> int:
    target = _target(args, None)
    _confirm(args, await insp.count(target), "delete")
    return _report(args, "deleted", await insp.delete(target))


async def _purge(insp: Inspector, args: argparse.Namespace) -> int:
    states = [JobState(s) for s in args.state] or [s for s in JobState if s is not JobState.RUNNING]
    if JobState.RUNNING in states:
        msg = "running jobs cannot be purged: they belong to a worker until they finish"
        raise CliError(msg)
    total = 0
    for state in states:
        total += await insp.count(JobFilter(args.queue, state, args.task))
    _confirm(args, total, f"purge {args.queue!r} ({', '.join(s.value for s in states)})")
    return _report(args, "deleted", await insp.purge(args.queue, states, task=args.task))


async def _pause(insp: Inspector, args: argparse.Namespace) -> int:
    await insp.pause(args.queue)
    _write(f"paused {args.queue}: workers stop fetching from it; enqueued jobs wait")
    return 0


async def _resume(insp: Inspector, args: argparse.Namespace) -> int:
    await insp.resume(args.queue)
    _write(f"resumed {args.queue}")
    return 0


async def _enqueue(insp: Inspector, args: argparse.Namespace) -> int:
    payload = sys.stdin.buffer.read() if args.payload == "-" else args.payload.encode("utf-8")
    eta = None
    if args.eta and args.delay is not None:
        msg = "give --eta or --delay, not both"
        raise CliError(msg)
    if args.eta:
        try:
            eta = datetime.fromisoformat(args.eta)
        except ValueError:
            msg = f"--eta {args.eta!r} is not an ISO 8601 time, e.g. 2026-12-02T10:30:00+00:00"
            raise CliError(msg) from None
        if eta.tzinfo is None:
            eta = eta.replace(tzinfo=UTC)
    elif args.delay is not None:
        eta = datetime.now(UTC) + timedelta(seconds=args.delay)
    opts = JobOpts(id=args.id, queue=args.queue, max_retries=args.retries, timeout=args.timeout, eta=eta)
    job_id = await insp.server.enqueue(Job(args.task, payload, opts))
    _write(out.to_json({"id": job_id, "queue": args.queue, "task": args.task}, indent=0) if args.json else job_id)
    return 0


async def _top(insp: Inspector, args: argparse.Namespace) -> int:
    from tasqueue._top import run_top

    return await run_top(insp, interval=args.interval, once=args.once)


# ---- worker, plugins, version ----------------------------------------------------------------


def _worker(args: argparse.Namespace) -> int:
    from tasqueue import _logs

    _logs.setup(args.log_level, args.log_format)
    srv = load_server(args.app)  # also in the supervisor: a bad app is one error, not N restarting ones
    _select(srv, args.queues, args.concurrency)
    if args.processes == 1:
        if os.environ.get(_logs.SLOT_ENV) is not None:
            _loop.run(_supervised(srv, os.getppid()), args.loop)
        else:
            srv.run(loop=args.loop)
        return 0
    from tasqueue._supervisor import Supervisor, worker_command

    options = ["--log-level", args.log_level, "--log-format", args.log_format, "--loop", args.loop]
    if args.queues:
        options += ["--queues", args.queues]
    if args.concurrency is not None:
        options += ["--concurrency", str(args.concurrency)]
    return Supervisor(worker_command(args.app, options), args.processes).run()


async def _supervised(srv: Server, supervisor: int) -> None:
    """Run a worker under a supervisor; drain if the supervisor dies (killed with SIGKILL, say), rather than run on orphaned."""

    async def watch() -> None:
        while os.getppid() == supervisor:  # noqa: ASYNC110 - no event announces a parent's death portably
            await asyncio.sleep(1.0)
        logging.getLogger("tasqueue.worker").warning("the supervisor (pid %d) is gone; stopping", supervisor)
        await srv.stop()

    async with srv:
        watcher = asyncio.create_task(watch())
        try:
            await srv.start()
        finally:
            watcher.cancel()


def _select(srv: Server, queues: str | None, concurrency: int | None) -> None:
    """Keep only the chosen queues (and their tasks), and override their concurrency."""
    if not srv.tasks:
        msg = "no tasks are registered: register handlers with register_task() or @srv.task before start()"
        raise CliError(msg)
    if queues:
        chosen = [q.strip() for q in queues.split(",") if q.strip()]
        unknown = [q for q in chosen if q not in srv.queues]
        if unknown:
            msg = f"no task of this app consumes queue(s) {', '.join(unknown)} (its queues: {', '.join(sorted(srv.queues))})"
            raise CliError(msg)
        srv.queues = {q: c for q, c in srv.queues.items() if q in chosen}
        srv.tasks = {n: t for n, t in srv.tasks.items() if t.opts.queue in chosen}
    if concurrency is not None:
        if concurrency < 1:
            msg = f"--concurrency must be at least 1, got {concurrency}"
            raise CliError(msg)
        srv.queues = {q: QueueConfig(concurrency, explicit=True) for q in srv.queues}


def _plugins(args: argparse.Namespace) -> int:
    from tasqueue._about import plugins

    found = plugins()
    if args.json:
        _write(out.to_json(found))
        return 0
    rows = [[p.name, p.package, p.version, " ".join(f"{s}://" for s in p.schemes) or "-", ", ".join(p.hooks)] for p in found]
    _write(out.table(["PLUGIN", "PACKAGE", "VERSION", "SCHEMES", "HOOKS"], rows))
    return 0


class _Version(argparse.Action):
    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object, option: str | None = None
    ) -> None:
        from tasqueue._about import versions

        for package, version in versions():
            _write(f"{package} {version}")
        parser.exit()


# ---- the parser ------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tasqueue",
        description="Run tasqueue workers, and read and act on queues, jobs and workers.",
        epilog=(
            "Exit status: 0 done, 1 an error, 2 bad usage, 3 no such job or result, 4 a backend unreachable or failing. "
            f"Set {DEBUG_ENV}=1 to see the traceback of an unexpected error."
        ),
    )
    parser.add_argument("--version", action=_Version, nargs=0, help="print the versions of tasqueue and its installed plugins")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    conn = argparse.ArgumentParser(add_help=False)
    conn.add_argument("--broker", metavar="URL", help=f"broker URL (default: ${BROKER_ENV}, else the app's, else --results)")
    conn.add_argument("--results", metavar="URL", help=f"results-store URL (default: ${RESULTS_ENV}, else the broker URL)")
    conn.add_argument("-A", "--app", metavar="MODULE:SRV", help=f"take the backends from this app's Server (or ${APP_ENV})")
    js = argparse.ArgumentParser(add_help=False)
    js.add_argument("--json", action="store_true", help="print JSON for scripts")
    yes = argparse.ArgumentParser(add_help=False)
    yes.add_argument("-y", "--yes", action="store_true", help="do not ask before touching more than one job")

    def add(name: str, help_: str, run: Callable[[argparse.Namespace], int], *parents: argparse.ArgumentParser, **kw: Any) -> Any:
        sub = commands.add_parser(
            name, help=help_, description=kw.pop("description", help_[0].upper() + help_[1:] + "."), parents=list(parents), **kw
        )
        sub.set_defaults(run=run)
        return sub

    worker = add(
        "worker",
        "run the worker of a Server, in one process or several",
        _worker,
        description=(
            "Import the Server that APP names and run its worker until SIGINT or SIGTERM. A first signal stops "
            "fetching and lets running jobs finish within the Server's shutdown_timeout, handing the rest back to "
            "the broker; a second one hands them back at once. With --processes N a supervisor runs N worker "
            "processes, restarts one that dies (with a backoff, saying why it died) and passes signals on."
        ),
        epilog="Example: tasqueue worker myapp.tasks:srv --processes 4 --queues emails,reports --concurrency 20",
    )
    worker.add_argument("app", metavar="APP", help="module:attribute naming a tasqueue.Server, e.g. myapp.tasks:srv")
    worker.add_argument("-p", "--processes", type=int, default=1, metavar="N", help="worker processes to run (default: 1)")
    worker.add_argument("-Q", "--queues", metavar="Q1,Q2", help="consume only these queues (default: every queue with a task)")
    worker.add_argument(
        "-c", "--concurrency", type=int, metavar="N", help="jobs at once per queue, overriding the tasks' concurrency"
    )
    worker.add_argument(
        "--log-level", default="INFO", type=str.upper, choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="default: INFO"
    )
    worker.add_argument(
        "--log-format", default="text", choices=["text", "json"], help="text lines (default) or one JSON object per line"
    )
    worker.add_argument(
        "--loop",
        default="auto",
        choices=LOOPS,
        help="the event loop: uvloop when installed (pip install 'tasqueue-core[uvloop]'), else asyncio's (default: auto)",
    )

    add("queues", "list queues with their job counts per state", _inspect(_queues), conn, js)

    jobs = add("jobs", "list jobs of a queue in one state, a page at a time", _inspect(_jobs), conn, js)
    jobs.add_argument("-q", "--queue", default=DEFAULT_QUEUE, help=f"the queue (default: {DEFAULT_QUEUE})")
    jobs.add_argument("-s", "--state", default="queued", choices=_STATES, help="default: queued")
    jobs.add_argument("--task", help="only jobs of this task")
    jobs.add_argument("--limit", type=int, default=50, help="jobs per page (default: 50)")
    jobs.add_argument("--cursor", help="where the previous page ended (printed after it)")
    jobs.add_argument("--oldest", action="store_true", help="oldest first (default: newest first)")

    job = add(
        "job",
        "show a job's story: state, attempts, error, traceback, sizes, payload preview",
        _inspect(_job),
        conn,
        js,
        description=(
            "Show what is stored about a job. Payloads bigger than 1 kB show as a preview with their size; "
            "--full shows all of it, `tasqueue payload ID > file` writes the raw bytes. In JSON, bytes are text when "
            'they are readable UTF-8, else {"base64": "..."}.'
        ),
    )
    job.add_argument("id", metavar="ID")
    job.add_argument("--full", action="store_true", help="the whole payload, however big")

    payload = add("payload", "write a job's payload bytes to stdout, raw", _inspect(_payload), conn)
    payload.add_argument("id", metavar="ID")
    result = add("result", "write a job's result bytes to stdout, raw (--json: as JSON)", _inspect(_result), conn, js)
    result.add_argument("id", metavar="ID")

    def selection(sub: Any, default_state: str | None) -> None:
        sub.add_argument("ids", metavar="ID", nargs="*", help="job ids; or select with --queue")
        sub.add_argument("-q", "--queue", help="act on every matching job of this queue")
        if default_state is None:
            sub.add_argument(
                "-s", "--state", choices=[s for s in _STATES if s != "running"], help="with --queue: the jobs' state"
            )
        sub.add_argument("--task", help="with --queue: only jobs of this task")

    retry = add("retry", "run failed jobs again from their first attempt", _inspect(_retry), conn, js, yes)
    selection(retry, "failed")
    run_now = add("run-now", "make delayed jobs ready now", _inspect(_run_now), conn, js, yes)
    selection(run_now, None)
    delete = add("delete", "delete jobs that are not running, with their results", _inspect(_delete), conn, js, yes)
    selection(delete, None)

    purge = add("purge", "delete every job of a queue (in some states)", _inspect(_purge), conn, js, yes)
    purge.add_argument("queue", metavar="QUEUE")
    purge.add_argument(
        "-s",
        "--state",
        action="append",
        default=[],
        choices=[s for s in _STATES if s != "running"],
        help="repeatable; default: all but running",
    )
    purge.add_argument("--task", help="only jobs of this task")

    pause = add("pause", "stop workers fetching from a queue (enqueues still land)", _inspect(_pause), conn)
    pause.add_argument("queue", metavar="QUEUE")
    resume = add("resume", "let workers fetch from a paused queue again", _inspect(_resume), conn)
    resume.add_argument("queue", metavar="QUEUE")

    add("workers", "list live workers: host, pid, queues, busy slots, heartbeat", _inspect(_workers), conn, js)
    add("schedules", "list recurring jobs and their next run", _inspect(_schedules), conn, js)

    enqueue = add(
        "enqueue", "enqueue a job; PAYLOAD is text, or - to read bytes from stdin; prints its id", _inspect(_enqueue), conn, js
    )
    enqueue.add_argument("task", metavar="TASK")
    enqueue.add_argument("payload", metavar="PAYLOAD")
    enqueue.add_argument("-q", "--queue", default=DEFAULT_QUEUE, help=f"default: {DEFAULT_QUEUE}")
    enqueue.add_argument("--retries", type=int, default=0, help="retries after a failure (default: 0)")
    enqueue.add_argument("--timeout", type=float, help="seconds the handler may run")
    enqueue.add_argument("--delay", type=float, help="run after this many seconds")
    enqueue.add_argument("--eta", help="run at this ISO 8601 time (UTC if no offset)")
    enqueue.add_argument("--id", help="the job id (an idempotency key: an id already stored is not enqueued again)")

    top = add(
        "top",
        "a live view of queues, workers and failures (needs tasqueue-core[cli])",
        _inspect(_top),
        conn,
        description=(
            "A live view, refreshed every second: per queue the counts and throughput, the workers and their jobs, "
            "the latest failures. Keys: up/down pick a queue, p pauses or resumes it, r retries its failed jobs, q quits."
        ),
    )
    top.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes (default: 1)")
    top.add_argument("--once", action="store_true", help="print one frame (after one interval, for the rates) and exit")

    plugins = add("plugins", "list tasqueue and its plugins: versions, URL schemes, hooks", _plugins)
    plugins.add_argument("--json", action="store_true", help="print JSON for scripts")
    # Listed for --help; main() hands its arguments to the tasqueue-dashboard package before parsing.
    commands.add_parser(
        "dashboard", help="serve the web dashboard (pip install tasqueue-dashboard; dashboard --help)", add_help=False
    )
    return parser


def _dashboard(argv: list[str]) -> int:
    """``tasqueue dashboard``: the tasqueue-dashboard package's command, imported only when asked for."""
    try:
        from tasqueue_dashboard.cli import main as dashboard
    except ImportError as exc:
        if exc.name is not None and exc.name.split(".")[0] != "tasqueue_dashboard":
            raise  # the package is there but something it needs is not: say which
        print("tasqueue: error: the dashboard is a separate package: pip install tasqueue-dashboard", file=sys.stderr)
        return 1
    return dashboard(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``tasqueue`` command with ``argv`` (``sys.argv[1:]`` by default); return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["dashboard"]:
        return _dashboard(argv[1:])
    args = _parser().parse_args(argv)
    try:
        status: int = args.run(args)
    except NotFoundError as exc:
        return _fail(exc, EXIT_NOT_FOUND)
    except (BrokerError, ResultsError) as exc:
        return _fail(exc, EXIT_UNREACHABLE)
    except (TasqueueError, CliError, ValueError) as exc:
        return _fail(exc, EXIT_ERROR)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug in the user's app, or ours: one line, unless asked for the traceback
        if os.environ.get(DEBUG_ENV):
            raise
        return _fail(f"{type(exc).__name__}: {exc} (set {DEBUG_ENV}=1 to see the traceback)", EXIT_ERROR)
    return status


def _fail(problem: object, status: int) -> int:
    print(f"tasqueue: error: {problem}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
