"""Fixtures of the tasqueue-redis tests: backends on the session's throwaway redis-server.

Tests share one redis-server (``redis_server`` in tests/conftest.py) and stay apart by a key
prefix of their own, which is cheaper than a FLUSHALL and lets tests run side by side.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from tasqueue.results import Results
from tasqueue.testing import ResultsFactory
from tasqueue_redis import RedisBroker, RedisResults

#: A short lease keeps the lease tests quick; heartbeats come every third of it.
TEST_VT = 1.0


@pytest.fixture
def prefix() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest_asyncio.fixture
async def redis_broker(redis_server, prefix: str) -> AsyncIterator[RedisBroker]:
    broker = RedisBroker.from_url(redis_server.url, prefix=prefix, visibility_timeout=TEST_VT)
    yield broker
    await broker.close()


@pytest_asyncio.fixture
async def redis_results_factory(redis_server, prefix: str) -> AsyncIterator[ResultsFactory]:
    made: list[RedisResults] = []

    async def make(*, expiry: float | None = 60.0) -> Results:
        # Each store of one test gets its own prefix too: "empty" means empty.
        store = RedisResults.from_url(redis_server.url, prefix=f"{prefix}-{len(made)}", expiry=expiry)
        made.append(store)
        return store

    yield make
    for store in made:
        await store.close()


class RedisCluster:
    """Three ``redis-server --cluster-enabled yes`` masters on free loopback ports, slots spread."""

    def __init__(self, directory: Path, nodes: int = 3) -> None:
        self.binary = need_binary("redis-server", "apt-get install redis-server")
        self.cli = need_binary("redis-cli", "apt-get install redis-tools")
        self.procs: list[subprocess.Popen[bytes]] = []
        self.ports: list[int] = []
        try:
            self._start(directory, nodes)
        except BaseException:
            self.stop()
            raise

    def _start(self, directory: Path, nodes: int) -> None:
        for n in range(nodes):
            node_dir = directory / f"node-{n}"
            node_dir.mkdir(parents=True)
            port = _cluster_port()
            args = [
                self.binary,
                "--port", str(port),
                "--bind", "127.0.0.1",
                "--dir", str(node_dir),
                "--save", "",
                "--appendonly", "no",
                "--cluster-enabled", "yes",
                "--cluster-config-file", str(node_dir / "nodes.conf"),
                "--cluster-node-timeout", "5000",
                "--logfile", str(node_dir / "redis.log"),
            ]  # fmt: skip
            self.procs.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            self.ports.append(port)
        for port, proc in zip(self.ports, self.procs, strict=True):
            _wait_for_port(port, proc)
        addresses = [f"127.0.0.1:{p}" for p in self.ports]
        subprocess.run(
            [self.cli, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        self._wait_until_ok()

    def _wait_until_ok(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        for port in self.ports:
            while True:
                out = subprocess.run(
                    [self.cli, "-p", str(port), "cluster", "info"], capture_output=True, text=True, timeout=10, check=False
                ).stdout
                if "cluster_state:ok" in out:
                    break
                if time.monotonic() > deadline:
                    msg = f"cluster node {port} not ok after {timeout}s:\n{out}"
                    raise RuntimeError(msg)
                time.sleep(0.05)  # the cluster is converging; there is nothing to block on

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0?cluster=true"

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            msg = f"redis-server on port {port} exited with {proc.returncode} while starting"
            raise RuntimeError(msg)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)  # the process is starting; nothing to block on but the port
    msg = f"redis-server on port {port} did not start within {timeout}s"
    raise RuntimeError(msg)


def _cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too."""
    while True:
        port = free_port()
        if port + 10000 > 65535:
            continue
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        return port


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def need_binary(name: str, hint: str) -> str:
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not on PATH ({hint})"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """One three-master Redis Cluster for the session; tests keep apart by key prefix."""
    cluster = RedisCluster(tmp_path_factory.mktemp("redis-cluster"))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest_asyncio.fixture
async def cluster_broker(redis_cluster: RedisCluster, prefix: str) -> AsyncIterator[RedisBroker]:
    broker = RedisBroker.from_url(redis_cluster.url, prefix=prefix, visibility_timeout=TEST_VT)
    yield broker
    await broker.close()


@pytest_asyncio.fixture
async def cluster_results_factory(redis_cluster: RedisCluster, prefix: str) -> AsyncIterator[ResultsFactory]:
    made: list[RedisResults] = []

    async def make(*, expiry: float | None = 60.0) -> Results:
        store = RedisResults.from_url(redis_cluster.url, prefix=f"{prefix}-{len(made)}", expiry=expiry)
        made.append(store)
        return store

    yield make
    for store in made:
        await store.close()
