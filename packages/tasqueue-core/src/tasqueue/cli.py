"""The ``tasqueue`` command: run a worker, and look at jobs, results and queues.

    tasqueue worker myapp.tasks:srv                      # import a Server and run its worker
    tasqueue job 3f2a...        --results redis://...    # a job's stored message, as JSON
    tasqueue result 3f2a...     --results redis://...    # a job's result bytes, raw
    tasqueue pending --queue q1 --broker redis://...     # jobs waiting on a queue
    tasqueue success / tasqueue failed                   # ids of finished jobs

The inspection commands build a Server from ``--broker`` / ``--results`` (or the environment
variables ``TASQUEUE_BROKER`` / ``TASQUEUE_RESULTS``; the broker defaults to ``memory://``, the
results to the broker's backend where it has a results store). Errors tasqueue
raises on purpose (an unknown URL scheme, a missing job) are printed as one line, exit code 1.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import importlib
import logging
import os
import sys
import unicodedata
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

import msgspec

from tasqueue.errors import TasqueueError
from tasqueue.jobs import DEFAULT_QUEUE
from tasqueue.messages import JobMessage
from tasqueue.server import Server

__all__ = ["load_server", "main", "to_json"]

BROKER_ENV = "TASQUEUE_BROKER"
RESULTS_ENV = "TASQUEUE_RESULTS"


class CliError(Exception):
    """A mistake on the command line, reported as one line on stderr."""


# ---- worker ----------------------------------------------------------------------------------


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


def _worker(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    load_server(args.app).run()
    return 0


# ---- inspection ------------------------------------------------------------------------------


def _show_bytes(data: bytes) -> str | dict[str, str]:
    """Bytes as JSON that is safe on a terminal: the text if it is readable UTF-8, else base64.

    A string in the output is always the payload's own text; ``{"base64": ...}`` marks binary
    data (or text with control characters, which could drive the terminal).
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:
        if not any(unicodedata.category(c) == "Cc" and c not in "\t\n\r" for c in text):
            return text
    return {"base64": base64.b64encode(data).decode("ascii")}


def _plain(value: Any) -> Any:
    """Structs as dicts with every field (defaults too, so ``status`` always shows), bytes made safe."""
    if isinstance(value, msgspec.Struct):
        return {name: _plain(getattr(value, name)) for name in value.__struct_fields__}
    if isinstance(value, bytes):
        return _show_bytes(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def to_json(message: msgspec.Struct, *, indent: int = 2) -> str:
    """A message as JSON text; payloads and results appear as text or ``{"base64": ...}``."""
    data = msgspec.json.encode(_plain(message))
    return (msgspec.json.format(data, indent=indent) if indent else data).decode()


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")


async def _job(srv: Server, args: argparse.Namespace) -> int:
    _out(to_json(await srv.get_job(args.id)))
    return 0


async def _result(srv: Server, args: argparse.Namespace) -> int:
    data = await srv.get_result(args.id)
    sys.stdout.flush()
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()
    return 0


def _summary(m: JobMessage) -> str:
    eta = m.job.opts.eta.isoformat() if m.job.opts.eta is not None else "-"
    return "\t".join([m.id, m.job.task, m.status, f"{m.retried}/{m.max_retry}", eta])


async def _pending(srv: Server, args: argparse.Namespace) -> int:
    for m in await srv.get_pending(args.queue):
        _out(to_json(m, indent=0) if args.json else _summary(m))
    return 0


async def _success(srv: Server, args: argparse.Namespace) -> int:
    for job_id in await srv.get_success():
        _out(job_id)
    return 0


async def _failed(srv: Server, args: argparse.Namespace) -> int:
    for job_id in await srv.get_failed():
        _out(job_id)
    return 0


Inspect = Callable[[Server, argparse.Namespace], Awaitable[int]]


def _inspect(command: Inspect, uses: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        url = args.broker if uses == "broker" else args.results or args.broker
        parts = urlsplit(url)
        if parts.scheme == "memory" and not (parts.netloc or parts.path.strip("/")):
            print(
                f"note: {url} lives inside one process, so this command sees it empty; give --{uses} "
                f"(or {BROKER_ENV if uses == 'broker' else RESULTS_ENV}) a shared backend such as redis://",
                file=sys.stderr,
            )

        async def go() -> int:
            async with Server(args.broker, args.results) as srv:
                return await command(srv, args)

        return asyncio.run(go())

    return run


# ---- the parser ------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tasqueue",
        description="Run a tasqueue worker, or look at jobs, results and queues.",
        epilog="Exit status: 0 on success, 1 on an error (unknown URL scheme, missing job, ...), 2 on bad usage.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    worker = commands.add_parser(
        "worker",
        help="run the worker of a Server",
        description=(
            "Import the Server that APP names and run its worker (Server.run()) until SIGINT or SIGTERM. "
            "A first signal stops fetching and lets running jobs finish within the Server's shutdown_timeout, "
            "handing the rest back to the broker; a second one hands them back at once. The Server's own "
            "broker and results URLs, tasks and options are used as they are."
        ),
        epilog="Example: tasqueue worker myapp.tasks:srv   (myapp/tasks.py defines srv = Server(...) and its tasks)",
    )
    worker.add_argument(
        "app",
        metavar="APP",
        help="module:attribute naming a tasqueue.Server, e.g. myapp.tasks:srv; the current directory is importable",
    )
    worker.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="what the worker logs to stderr (default: INFO)",
    )
    worker.set_defaults(run=_worker)

    backends = argparse.ArgumentParser(add_help=False)
    backends.add_argument(
        "--broker",
        metavar="URL",
        default=os.environ.get(BROKER_ENV, "memory://"),
        help=f"broker URL (default: ${BROKER_ENV}, else memory://)",
    )
    backends.add_argument(
        "--results",
        metavar="URL",
        default=os.environ.get(RESULTS_ENV),
        help=f"results-store URL (default: ${RESULTS_ENV}, else the broker's backend if it has a results store)",
    )

    job = commands.add_parser(
        "job",
        parents=[backends],
        help="print a job's stored message as JSON",
        description=(
            "Print the stored JobMessage of a job as JSON: status, retries, last error, the job and its options. "
            'Byte fields (payload, prev_job_result) show as text when they are readable UTF-8, else as {"base64": "..."}.'
        ),
    )
    job.add_argument("id", metavar="ID", help="the job id")
    job.set_defaults(run=_inspect(_job, "results"))

    result = commands.add_parser(
        "result",
        parents=[backends],
        help="write a job's result bytes to stdout",
        description="Write the result a job saved to stdout, byte for byte (no newline is added).",
    )
    result.add_argument("id", metavar="ID", help="the job id")
    result.set_defaults(run=_inspect(_result, "results"))

    pending = commands.add_parser(
        "pending",
        parents=[backends],
        help="list the jobs waiting on a queue",
        description=(
            "List the jobs of a queue that wait for a worker (ready or delayed, not running), oldest first: "
            "one line per job with tab-separated id, task, status, retried/max_retry and eta."
        ),
    )
    pending.add_argument("--queue", default=DEFAULT_QUEUE, help=f"the queue (default: {DEFAULT_QUEUE})")
    pending.add_argument("--json", action="store_true", help="print each job's whole message, one JSON object per line")
    pending.set_defaults(run=_inspect(_pending, "broker"))

    # Listed for --help; main() hands its arguments to the tasqueue-dashboard package before parsing.
    commands.add_parser(
        "dashboard", help="serve the web dashboard (pip install tasqueue-dashboard; dashboard --help)", add_help=False
    )

    success = commands.add_parser("success", parents=[backends], help="list the ids of successful jobs, oldest first")
    success.set_defaults(run=_inspect(_success, "results"))
    failed = commands.add_parser("failed", parents=[backends], help="list the ids of failed jobs, oldest first")
    failed.set_defaults(run=_inspect(_failed, "results"))
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tasqueue-core")
    except PackageNotFoundError:
        return "(not installed)"


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
    except (TasqueueError, CliError) as exc:
        print(f"tasqueue: error: {exc}", file=sys.stderr)
        return 1
    return status


if __name__ == "__main__":
    sys.exit(main())
