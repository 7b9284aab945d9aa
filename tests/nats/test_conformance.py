"""The core conformance kit against NATS JetStream, on every nats-server version found."""

from __future__ import annotations

import pytest_asyncio

from tasqueue.testing import BrokerSuite, ResultsFactory, ResultsSuite, ServerSuite
from tasqueue_nats import NatsBroker


class TestNatsBroker(BrokerSuite):
    @pytest_asyncio.fixture
    async def broker(self, nats_broker: NatsBroker) -> NatsBroker:
        return nats_broker


class TestNatsResults(ResultsSuite):
    @pytest_asyncio.fixture
    async def results_factory(self, nats_results_factory: ResultsFactory) -> ResultsFactory:
        return nats_results_factory


class TestNatsServer(ServerSuite):
    @pytest_asyncio.fixture
    async def broker(self, nats_broker: NatsBroker) -> NatsBroker:
        return nats_broker

    @pytest_asyncio.fixture
    async def results_factory(self, nats_results_factory: ResultsFactory) -> ResultsFactory:
        return nats_results_factory
