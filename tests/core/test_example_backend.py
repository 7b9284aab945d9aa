"""examples/sqlite_backend.py, the worked example of docs/writing-a-backend.md, passes the whole conformance kit."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from tasqueue import ConfigurationError, Job, JobStatus, Server
from tasqueue.results import Results
from tasqueue.testing import BrokerSuite, ResultsFactory, ResultsSuite, ServerSuite, running

EXAMPLE = Path(__file__).parents[2] / "examples" / "sqlite_backend.py"
_spec = importlib.util.spec_from_file_location("sqlite_backend", EXAMPLE)
assert _spec is not None and _spec.loader is not None
sqlite_backend = importlib.util.module_from_spec(_spec)
sys.modules["sqlite_backend"] = sqlite_backend
_spec.loader.exec_module(sqlite_backend)


class Backend:
    """Each test gets a database file of its own, so it starts empty."""

    @pytest_asyncio.fixture
    async def broker(self, tmp_path: Path) -> AsyncIterator[object]:
        broker = sqlite_backend.SqliteBroker.from_url(f"sqlite:///{tmp_path}/jobs.db?visibility_timeout=1&poll=0.1")
        yield broker
        await broker.close()

    @pytest_asyncio.fixture
    async def results_factory(self, tmp_path: Path) -> AsyncIterator[ResultsFactory]:
        made: list[object] = []

        async def make(*, expiry: float | None = 60.0, list_limit: int | None = None) -> Results:
            limit = {} if list_limit is None else {"list_limit": list_limit}
            store = sqlite_backend.SqliteResults(str(tmp_path / f"results-{len(made)}.db"), expiry=expiry, **limit)
            made.append(store)
            return store

        yield make
        for store in made:
            await store.close()


class TestSqliteBroker(Backend, BrokerSuite):
    pass


class TestSqliteResults(Backend, ResultsSuite):
    pass


class TestSqliteServer(Backend, ServerSuite):
    pass


@pytest.mark.asyncio
async def test_one_url_names_both_halves_and_options_are_checked(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/app.db?visibility_timeout=5&expiry=60"
    async with Server(url, plugins=[sqlite_backend], load_entrypoints=False) as srv:
        assert isinstance(srv.broker, sqlite_backend.SqliteBroker) and srv.broker.visibility_timeout == 5
        assert isinstance(srv.results, sqlite_backend.SqliteResults) and srv.results.expiry == 60

        @srv.task("echo")
        async def echo(payload: bytes, ctx: object) -> bytes:
            return payload

        async with running(srv):
            job_id = await srv.enqueue(Job("echo", b"hi"))
            assert (await srv.wait(job_id, timeout=10)).status is JobStatus.SUCCESSFUL
        assert await srv.get_result(job_id) == b"hi"
    with pytest.raises(ConfigurationError, match="unknown option 'vt' for a sqlite broker"):
        Server(f"sqlite:///{tmp_path}/app.db?vt=5", plugins=[sqlite_backend], load_entrypoints=False)
