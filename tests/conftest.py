"""Session-wide fixtures: throwaway redis-server processes (see ``servers.py``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from servers import RedisServer

# The plugin applications use to test their tasks (the `tq` fixture); tested in tests/core/test_harness.py.
pytest_plugins = ["tasqueue.testing.plugin"]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the whole session; tests use separate key prefixes or FLUSHALL."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def make_redis(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """Start servers of a test's own, to kill or restart; all stopped at the end of the test."""
    made: list[RedisServer] = []

    def make(*, appendonly: bool = False, extra: tuple[str, ...] = ()) -> RedisServer:
        server = RedisServer(tmp_path / f"redis-{len(made)}", appendonly=appendonly, extra=extra)
        made.append(server)
        return server

    yield make
    for server in made:
        server.stop()
