"""The core conformance kit against NATS JetStream, on every nats-server version found."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from servers import NatsServer, version_tuple
from tasqueue.testing import BrokerSuite, Capabilities, InspectorSuite, ResultsFactory, ResultsSuite, ServerSuite
from tasqueue_nats import NatsBroker

# A nats-py connection runs its reader and flusher as tasks of the loop that connected it, so
# another loop cannot use it: declared, not left to fail, until the backend keeps one per loop.
# count_retention: the results stream keeps one message per subject and drops by age; dropping a
# list's oldest ids with their records would need an index of list order the stream does not keep.
NATS = Capabilities(any_loop=False, count_retention=False)


class TestNatsBroker(BrokerSuite):
    capabilities = NATS

    @pytest_asyncio.fixture
    async def broker(self, nats_broker: NatsBroker) -> NatsBroker:
        return nats_broker


class TestNatsResults(ResultsSuite):
    capabilities = NATS

    @pytest_asyncio.fixture
    async def results_factory(self, nats_results_factory: ResultsFactory) -> ResultsFactory:
        return nats_results_factory


class TestNatsServer(ServerSuite):
    capabilities = NATS

    @pytest_asyncio.fixture
    async def broker(self, nats_broker: NatsBroker) -> NatsBroker:
        return nats_broker

    @pytest_asyncio.fixture
    async def results_factory(self, nats_results_factory: ResultsFactory) -> ResultsFactory:
        return nats_results_factory


class TestNatsInspector(InspectorSuite):
    capabilities = NATS

    @pytest_asyncio.fixture
    async def broker(self, nats_broker: NatsBroker) -> NatsBroker:
        return nats_broker

    @pytest_asyncio.fixture
    async def results_factory(self, nats_results_factory: ResultsFactory) -> ResultsFactory:
        return nats_results_factory


class TestNatsBrokerWithoutServerSchedules(BrokerSuite):
    """On a server that has message schedules, the promoter that older servers rely on, too."""

    capabilities = NATS

    @pytest_asyncio.fixture
    async def broker(self, nats_server: NatsServer, nats_version: str, prefix: str) -> AsyncIterator[NatsBroker]:
        if version_tuple(nats_version) < (2, 12):
            pytest.skip("this server has no message schedules: the default suite already runs the promoter")
        broker = NatsBroker(nats_server.url, prefix=prefix, visibility_timeout=1.0, schedules="stream")
        yield broker
        await broker.close()
