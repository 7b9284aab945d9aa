"""``tasqueue dashboard``: serve the dashboard on its own, on uvicorn.

    tasqueue dashboard --broker redis://10.0.0.5/0 --results redis://10.0.0.5/1
    tasqueue dashboard -A myapp.tasks:srv --port 8421 --read-only
    TASQUEUE_DASHBOARD_AUTH=admin:s3cret tasqueue dashboard --broker redis://...

``tasqueue dashboard ...`` (the core's command) runs this module's ``main``; so does the
``tasqueue-dashboard`` script installed with the package.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from starlette.types import ASGIApp, Receive, Scope, Send

from tasqueue.errors import TasqueueError
from tasqueue.server import Server
from tasqueue_dashboard._security import mask_secrets

__all__ = ["main", "serve"]

AUTH_ENV = "TASQUEUE_DASHBOARD_AUTH"
BROKER_ENV = "TASQUEUE_BROKER"
RESULTS_ENV = "TASQUEUE_RESULTS"
APP_ENV = "TASQUEUE_APP"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tasqueue dashboard",
        description=(
            "Serve the tasqueue dashboard (queues, jobs, workers, schedules; retry, delete, purge, pause) on uvicorn. "
            "It binds to 127.0.0.1 unless told otherwise: put it behind HTTPS and --basic-auth before exposing it."
        ),
    )
    p.add_argument("--broker", metavar="URL", help=f"broker URL (default: ${BROKER_ENV}, else the app's)")
    p.add_argument("--results", metavar="URL", help=f"results-store URL (default: ${RESULTS_ENV}, else the broker URL)")
    p.add_argument("-A", "--app", metavar="MODULE:SRV", help=f"take the backends from this app's Server (or ${APP_ENV})")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8421, help="port to listen on (default: 8421)")
    p.add_argument("--root-path", default="", help="the path prefix a reverse proxy serves the dashboard under")
    p.add_argument("--read-only", action="store_true", help="show everything, allow no action")
    p.add_argument(
        "--basic-auth",
        metavar="USER:PASSWORD",
        default=os.environ.get(AUTH_ENV),
        help=f"ask for HTTP basic auth (default: ${AUTH_ENV}; prefer the variable: arguments show in ps)",
    )
    p.add_argument("--refresh", type=float, default=2.0, help="seconds between live updates (default: 2)")
    p.add_argument("--title", default="tasqueue", help="the name in the page header")
    return p


def _server(args: argparse.Namespace) -> tuple[Server, str]:
    """The Server to inspect and the label the page shows for it."""
    broker = args.broker or os.environ.get(BROKER_ENV)
    results = args.results or os.environ.get(RESULTS_ENV)
    app = args.app or (None if broker or results else os.environ.get(APP_ENV))
    if app and not (args.broker or args.results):
        from tasqueue.cli import load_server

        return load_server(app), app
    if not (broker or results):
        msg = f"say what to inspect: --broker URL [--results URL], or -A module:srv (or ${BROKER_ENV} / ${APP_ENV})"
        raise SystemExit(f"tasqueue dashboard: error: {msg}")
    broker_url: str = broker or results or ""
    results_url: str = results or broker_url
    if broker_url.startswith("memory:"):
        print(
            f"tasqueue dashboard: note: {broker_url} lives inside one process, so this dashboard sees it empty; "
            "give a shared backend such as redis://, or mount create_app(srv) in the app that owns the memory:// Server",
            file=sys.stderr,
        )
    label = broker_url if broker_url == results_url else f"{broker_url} · {results_url}"
    return Server(broker_url, results_url), label


class _ClosingServer:
    """``app``, plus a lifespan that closes ``server`` when uvicorn shuts down."""

    def __init__(self, app: ASGIApp, server: Server) -> None:
        self.app = app
        self.server = server

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.server.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


def serve(app: ASGIApp, server: Server, *, host: str, port: int, root_path: str = "") -> None:
    """Run ``app`` on uvicorn until SIGINT or SIGTERM; ``server`` is closed on the way out."""
    import uvicorn

    uvicorn.run(_ClosingServer(app, server), host=host, port=port, root_path=root_path, log_level="info", proxy_headers=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``tasqueue dashboard`` with ``argv``; return the exit status."""
    from tasqueue_dashboard import create_app

    args = _parser().parse_args(argv)
    credentials = None
    if args.basic_auth:
        user, sep, password = args.basic_auth.partition(":")
        if not sep or not user or not password:
            print("tasqueue dashboard: error: --basic-auth takes USER:PASSWORD", file=sys.stderr)
            return 2
        credentials = (user, password)
    try:
        server, label = _server(args)
        app = create_app(
            server, read_only=args.read_only, basic_auth=credentials, title=args.title, label=label, refresh=args.refresh
        )
    except (TasqueueError, ValueError) as exc:
        print(f"tasqueue dashboard: error: {exc}", file=sys.stderr)
        return 1
    print(
        f"tasqueue dashboard on http://{args.host}:{args.port}{args.root_path}/ for {mask_secrets(label)}"
        + (" (read-only)" if args.read_only else ""),
        file=sys.stderr,
    )
    # uvicorn configures its own loggers only; the action log (tasqueue.dashboard) goes to stderr too.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        serve(app, server, host=args.host, port=args.port, root_path=args.root_path)
    except KeyboardInterrupt:  # uvicorn stops, then passes the signal on
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
