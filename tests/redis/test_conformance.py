"""The core conformance kit against Redis: brokers, results stores and Server semantics."""

from __future__ import annotations

import pytest_asyncio

from tasqueue.testing import BrokerSuite, Capabilities, InspectorSuite, ResultsFactory, ResultsSuite, ServerSuite
from tasqueue_redis import RedisBroker

# redis-py's pooled connections belong to the event loop they were opened on; one reused from
# another loop fails ("attached to a different loop"). Declared, not left to fail, until the
# backends keep a pool per loop.
REDIS = Capabilities(any_loop=False)


class TestRedisBroker(BrokerSuite):
    capabilities = REDIS

    @pytest_asyncio.fixture
    async def broker(self, redis_broker: RedisBroker) -> RedisBroker:
        return redis_broker


class TestRedisResults(ResultsSuite):
    capabilities = REDIS

    @pytest_asyncio.fixture
    async def results_factory(self, redis_results_factory: ResultsFactory) -> ResultsFactory:
        return redis_results_factory


class TestRedisServer(ServerSuite):
    capabilities = REDIS

    @pytest_asyncio.fixture
    async def broker(self, redis_broker: RedisBroker) -> RedisBroker:
        return redis_broker

    @pytest_asyncio.fixture
    async def results_factory(self, redis_results_factory: ResultsFactory) -> ResultsFactory:
        return redis_results_factory


class TestRedisInspector(InspectorSuite):
    @pytest_asyncio.fixture
    async def broker(self, redis_broker: RedisBroker) -> RedisBroker:
        return redis_broker

    @pytest_asyncio.fixture
    async def results_factory(self, redis_results_factory: ResultsFactory) -> ResultsFactory:
        return redis_results_factory
