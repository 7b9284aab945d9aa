"""Fixtures of the tasqueue-redis tests: backends on the session's throwaway redis-server.

Tests share one redis-server (``redis_server`` in tests/conftest.py) and stay apart by a key
prefix of their own, which is cheaper than a FLUSHALL and lets tests run side by side.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from tasqueue.results import Results
from tasqueue.testing import ResultsFactory
from tasqueue_redis import RedisBroker, RedisResults

#: A short lease keeps the lease tests quick; heartbeats come every third of it.
TEST_VT = 1.0


@pytest.fixture
def prefix() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest_asyncio.fixture
async def redis_broker(redis_server, prefix: str) -> AsyncIterator[RedisBroker]:
    broker = RedisBroker.from_url(redis_server.url, prefix=prefix, visibility_timeout=TEST_VT)
    yield broker
    await broker.close()


@pytest_asyncio.fixture
async def redis_results_factory(redis_server, prefix: str) -> AsyncIterator[ResultsFactory]:
    made: list[RedisResults] = []

    async def make(*, expiry: float | None = 60.0) -> Results:
        # Each store of one test gets its own prefix too: "empty" means empty.
        store = RedisResults.from_url(redis_server.url, prefix=f"{prefix}-{len(made)}", expiry=expiry)
        made.append(store)
        return store

    yield make
    for store in made:
        await store.close()
