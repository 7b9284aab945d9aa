"""Fixtures of the dashboard tests: a Server with a running worker on memory:// or Redis, the app mounted under a prefix.

Every test that takes ``stack`` runs once per backend; Redis tests share the session's throwaway
redis-server and stay apart by a key prefix of their own.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from dashboard.dash_support import PREFIX, Stack, add_tasks, backends, host_app
from tasqueue import Server
from tasqueue.inspector import Inspector
from tasqueue.testing import eventually
from tasqueue_dashboard import create_app


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest_asyncio.fixture
async def server(backend: str, request: pytest.FixtureRequest) -> AsyncIterator[Server]:
    redis_url = request.getfixturevalue("redis_server").url if backend == "redis" else None
    broker, results = backends(redis_url, f"d-{uuid.uuid4().hex[:10]}")
    srv = Server(broker, results, load_entrypoints=False, shutdown_timeout=0.5, fetch_timeout=0.2)
    yield srv
    await srv.close()


@pytest_asyncio.fixture
async def stack(server: Server, backend: str) -> AsyncIterator[Stack]:
    """The dashboard (``stack.client(**create_app options)``) over ``server``, whose worker runs meanwhile."""
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
