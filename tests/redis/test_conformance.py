"""The core conformance kit against Redis: brokers, results stores and Server semantics."""

from __future__ import annotations

import pytest_asyncio

from tasqueue.testing import BrokerSuite, InspectorSuite, ResultsFactory, ResultsSuite, ServerSuite
from tasqueue_redis import RedisBroker


class TestRedisBroker(BrokerSuite):
    @pytest_asyncio.fixture
    async def broker(self, redis_broker: RedisBroker) -> RedisBroker:
        return redis_broker


class TestRedisResults(ResultsSuite):
    @pytest_asyncio.fixture
    async def results_factory(self, redis_results_factory: ResultsFactory) -> ResultsFactory:
        return redis_results_factory


class TestRedisServer(ServerSuite):
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
