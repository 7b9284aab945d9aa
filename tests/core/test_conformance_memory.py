"""The conformance kit against the embedded backend: the reference every other backend follows."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from tasqueue.memory import DEFAULT_LIST_LIMIT, MemoryBroker, MemoryResults
from tasqueue.results import Results
from tasqueue.testing import BrokerSuite, InspectorSuite, ResultsFactory, ResultsSuite, ServerSuite


@pytest_asyncio.fixture
async def memory_broker() -> AsyncIterator[MemoryBroker]:
    broker = MemoryBroker(visibility_timeout=0.5)
    yield broker
    await broker.close()


@pytest_asyncio.fixture
async def memory_results_factory() -> AsyncIterator[ResultsFactory]:
    async def make(*, expiry: float | None = 60.0, list_limit: int | None = None) -> Results:
        return MemoryResults(expiry=expiry, list_limit=list_limit or DEFAULT_LIST_LIMIT)

    yield make


class TestMemoryBroker(BrokerSuite):
    @pytest_asyncio.fixture
    async def broker(self, memory_broker: MemoryBroker) -> MemoryBroker:
        return memory_broker


class TestMemoryResults(ResultsSuite):
    @pytest_asyncio.fixture
    async def results_factory(self, memory_results_factory: ResultsFactory) -> ResultsFactory:
        return memory_results_factory


class TestMemoryServer(ServerSuite):
    @pytest_asyncio.fixture
    async def broker(self, memory_broker: MemoryBroker) -> MemoryBroker:
        return memory_broker

    @pytest_asyncio.fixture
    async def results_factory(self, memory_results_factory: ResultsFactory) -> ResultsFactory:
        return memory_results_factory


class TestMemoryInspector(InspectorSuite):
    @pytest_asyncio.fixture
    async def broker(self, memory_broker: MemoryBroker) -> MemoryBroker:
        return memory_broker

    @pytest_asyncio.fixture
    async def results_factory(self, memory_results_factory: ResultsFactory) -> ResultsFactory:
        return memory_results_factory
