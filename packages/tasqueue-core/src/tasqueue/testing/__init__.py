"""The backend conformance kit: one pytest suite every broker and results store must pass.

A backend's whole conformance test is a subclass per suite and one fixture that yields a fresh,
empty, connected backend::

    import pytest_asyncio
    from tasqueue.testing import BrokerSuite, ResultsSuite, ServerSuite

    class TestMyBroker(BrokerSuite):
        @pytest_asyncio.fixture
        async def broker(self):
            b = MyBroker(url, visibility_timeout=1.0)   # a short lease keeps the suite quick
            yield b
            await b.close()

    class TestMyResults(ResultsSuite):
        @pytest_asyncio.fixture
        async def results_factory(self):
            made = []
            async def make(*, expiry: float | None = 60.0, list_limit: int | None = None):
                store = MyResults(url, expiry=expiry, list_limit=list_limit)   # empty
                made.append(store)
                return store
            yield make
            for store in made:
                await store.close()

    class TestMyServer(ServerSuite):
        ...  # both fixtures above: `broker` and `results_factory`

What a backend cannot do is declared, not left to fail: set ``capabilities =
Capabilities(delayed=False)`` on the subclass and the tests that need it are skipped with
that reason. Install with ``pip install tasqueue-core[testing]``; the suites need pytest and
pytest-asyncio.

For testing an application's own tasks, ``Harness`` runs its Server's worker inside the test on
memory://, with ``drain()`` and a ``Clock`` the test moves; ``tasqueue.testing.plugin`` gives it
as the ``tq`` fixture.
"""

from tasqueue.testing._broker import BrokerSuite
from tasqueue.testing._clock import Clock
from tasqueue.testing._common import Capabilities, ResultsFactory, eventually, running
from tasqueue.testing._harness import Harness
from tasqueue.testing._inspector import InspectorSuite
from tasqueue.testing._results import ResultsSuite
from tasqueue.testing._server import ServerSuite

__all__ = [
    "BrokerSuite",
    "Capabilities",
    "Clock",
    "Harness",
    "InspectorSuite",
    "ResultsFactory",
    "ResultsSuite",
    "ServerSuite",
    "eventually",
    "running",
]
