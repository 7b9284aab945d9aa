"""The pytest plugin for testing an application's tasks: ``pytest_plugins = ["tasqueue.testing.plugin"]``.

Fixtures:

- ``tasqueue_server``: the Server under test; a fresh ``Server()`` unless a conftest overrides
  it to return the application's own.
- ``tq``: a started ``Harness`` around it: memory:// backends, the worker running in the test,
  ``await tq.drain()`` and ``tq.clock.advance(seconds)``.

::

    # conftest.py
    import pytest
    pytest_plugins = ["tasqueue.testing.plugin"]

    @pytest.fixture
    def tasqueue_server():
        from myapp.tasks import srv
        return srv

    # test_tasks.py
    async def test_add(tq):
        job_id = await add.enqueue(AddArgs(a=1, b=2))
        await tq.drain()
        assert await add.result(job_id) == 3
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from tasqueue.server import Server
from tasqueue.testing._harness import Harness

__all__ = ["tasqueue_server", "tq"]


@pytest.fixture
def tasqueue_server() -> Server:
    """The Server whose tasks are tested; override it to return your application's Server."""
    return Server()


@pytest_asyncio.fixture
async def tq(tasqueue_server: Server) -> AsyncIterator[Harness]:
    """``tasqueue_server`` on memory://, its worker started at the first ``drain()``, and a clock to move."""
    async with Harness(tasqueue_server) as harness:
        yield harness
