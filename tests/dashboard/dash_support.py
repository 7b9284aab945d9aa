"""What the dashboard tests share: the Stack a test drives, and posting actions the way the pages do."""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import httpx
from starlette.applications import Starlette
from starlette.routing import Mount

from tasqueue import Job, JobCtx, JobOpts, Server
from tasqueue.control import JobState
from tasqueue.inspector import Inspector
from tasqueue.testing import eventually
from tasqueue_dashboard import create_app
from tasqueue_dashboard._security import CSRF_COOKIE

PREFIX = "/admin/tq"
#: A short lease gives quick worker heartbeats (a third of it), so indexes and counts move fast.
VT = 1.0


class Boom(Exception):
    pass


@dataclass
class Stack:
    """A Server with tasks, its worker, and the dashboard mounted at ``PREFIX`` in a host app."""

    server: Server
    inspector: Inspector
    backend: str
    make_client: Callable[..., httpx.AsyncClient]
    #: Payloads of ``flaky`` that fail until they are added here.
    healed: set[bytes] = field(default_factory=set)

    def client(self, **options: Any) -> httpx.AsyncClient:
        return self.make_client(**options)

    async def enqueue(self, task: str, payload: bytes = b"{}", **opts: Any) -> str:
        return await self.server.enqueue(Job(task, payload, JobOpts(**opts)))

    async def status(self, job_id: str) -> str:
        return (await self.server.get_job(job_id)).status

    async def until_status(self, job_id: str, status: str, timeout: float = 10.0) -> None:
        async def check() -> bool:
            return await self.status(job_id) == status

        await eventually(check, timeout=timeout)

    async def until_worker_paused(self, queue: str) -> None:
        """Wait until the worker says it stopped fetching from ``queue`` (it learns of a pause on its next beat)."""

        async def check() -> bool:
            return any(queue in w.paused for w in await self.inspector.workers())

        await eventually(check, timeout=10)

    async def until_indexed(self, queue: str, state: str, n: int) -> None:
        """Wait until the control plane lists ``n`` jobs of ``queue`` in ``state`` (fed by worker beats)."""

        async def check() -> bool:
            return (await self.inspector.queue(queue)).counts.get(JobState(state)) == n

        await eventually(check, timeout=10)


def backends(redis_url: str | None, prefix: str) -> tuple[Any, Any]:
    if redis_url is None:
        return f"memory://?visibility_timeout={VT}", "memory://"
    from tasqueue_redis import RedisBroker, RedisResults

    return (
        RedisBroker.from_url(redis_url, prefix=prefix, visibility_timeout=VT),
        RedisResults.from_url(redis_url, prefix=prefix),
    )


def add_tasks(srv: Server, healed: set[bytes]) -> None:
    @srv.task("ok", concurrency=4)
    async def ok(payload: bytes, ctx: JobCtx) -> bytes:
        return b'{"echo": ' + payload + b"}"

    @srv.task("fail")
    async def fail(payload: bytes, ctx: JobCtx) -> None:
        raise Boom(f"cannot do {payload.decode()}")

    @srv.task("flaky", concurrency=4)
    async def flaky(payload: bytes, ctx: JobCtx) -> bytes:
        if payload not in healed:
            raise Boom("not yet")
        return b"healed"


def host_app(app: Any) -> Starlette:
    return Starlette(routes=[Mount(PREFIX, app)])


_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


async def csrf_of(client: httpx.AsyncClient, path: str = "/") -> str:
    """The CSRF token a page carries (its cookie is kept by the client)."""
    page = await client.get(path)
    match = _CSRF.search(page.text)
    if match is None:  # a page without forms (read-only) still sets the cookie
        token = client.cookies.get(CSRF_COOKIE)
        assert token, f"no CSRF token on {path}: {page.status_code} {page.text[:300]}"
        return token
    return match.group(1)


async def post(
    client: httpx.AsyncClient, verb: str, data: dict[str, Any] | list[tuple[str, str]], *, page: str = "/"
) -> httpx.Response:
    """POST an action the way the page's form does: with its CSRF token and a way back."""
    token = await csrf_of(client, page)
    items = list(data.items()) if isinstance(data, dict) else list(data)
    items += [("csrf", token), ("next", PREFIX + page)]
    return await client.post(
        f"/actions/{verb}", content=urlencode(items), headers={"content-type": "application/x-www-form-urlencoded"}
    )


@contextlib.asynccontextmanager
async def new_server(redis_url: str | None) -> AsyncIterator[Server]:
    """A Server on memory:// (``redis_url=None``) or on keys of its own in that Redis."""
    broker, results = backends(redis_url, f"d-{uuid.uuid4().hex[:10]}")
    async with Server(broker, results, load_entrypoints=False, shutdown_timeout=0.5, fetch_timeout=0.2) as srv:
        yield srv


@contextlib.asynccontextmanager
async def running_stack(server: Server, backend: str) -> AsyncIterator[Stack]:
    """``server`` with its tasks and running worker, and clients of the dashboard over it."""
    healed: set[bytes] = set()
    add_tasks(server, healed)
    inspector = Inspector(server)
    clients: list[httpx.AsyncClient] = []

    def make_client(**options: Any) -> httpx.AsyncClient:
        options.setdefault("cache_ttl", 0)  # tests read what they just did; the cache has tests of its own
        app = host_app(create_app(inspector, **options))
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://dash.test" + PREFIX)
        clients.append(client)
        return client

    worker = asyncio.create_task(server.start(handle_signals=False))
    await eventually(lambda: server.running_loop)
    try:
        yield Stack(server, inspector, backend, make_client, healed)
    finally:
        for client in clients:
            await client.aclose()
        await server.stop()
        await worker
