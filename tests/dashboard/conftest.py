"""Fixtures of the dashboard tests: a Server with a running worker on memory:// or Redis, the app mounted under a prefix.

Every test that takes ``stack`` runs once per backend; Redis tests share the session's throwaway
redis-server and stay apart by a key prefix of their own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from dashboard.dash_support import Stack, new_server, running_stack
from tasqueue import Server


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest_asyncio.fixture
async def server(backend: str, request: pytest.FixtureRequest) -> AsyncIterator[Server]:
    redis_url = request.getfixturevalue("redis_server").url if backend == "redis" else None
    async with new_server(redis_url) as srv:
        yield srv


@pytest_asyncio.fixture
async def stack(server: Server, backend: str) -> AsyncIterator[Stack]:
    """The dashboard (``stack.client(**create_app options)``) over ``server``, whose worker runs meanwhile."""
    async with running_stack(server, backend) as made:
        yield made
