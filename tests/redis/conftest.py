"""Fixtures of the tasqueue-redis tests: backends on the session's throwaway redis-server.

Tests share one redis-server (``redis_server`` in tests/conftest.py) and stay apart by a key
prefix of their own, which is cheaper than a FLUSHALL and lets tests run side by side.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import pytest_asyncio

from servers import free_port, need_binary, wait_for_port
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


async def results_factory_on(url: str, prefix: str) -> AsyncIterator[ResultsFactory]:
    """Yield a factory of results stores on ``url``, closing every store it made afterwards."""
    made: list[RedisResults] = []

    async def make(*, expiry: float | None = 60.0, list_limit: int | None = None) -> Results:
        # Each store of one test gets its own prefix too: "empty" means empty.
        limit = {} if list_limit is None else {"list_limit": list_limit}
        store = RedisResults.from_url(url, prefix=f"{prefix}-{len(made)}", expiry=expiry, **limit)
        made.append(store)
        return store

    yield make
    for store in made:
        await store.close()


@pytest_asyncio.fixture
async def redis_results_factory(redis_server, prefix: str) -> AsyncIterator[ResultsFactory]:
    async for make in results_factory_on(redis_server.url, prefix):
        yield make


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
            wait_for_port(port, proc)
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
    async for make in results_factory_on(redis_cluster.url, prefix):
        yield make


# ---- fault tests: worker processes and their ledger ------------------------------------------

WORKER_SCRIPT = Path(__file__).with_name("fault_worker.py")


class LedgerLine(NamedTuple):
    job_id: str
    pid: int
    stalls: int
    at: float


class Workers:
    """Worker subprocesses (``fault_worker.py``) sharing one ledger directory; all killed at teardown."""

    def __init__(self, directory: Path) -> None:
        self.ledger = directory / "ledger"
        self.ledger.mkdir()
        self.logs = directory / "logs"
        self.logs.mkdir()
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, url: str, prefix: str, *, concurrency: int = 50, vt: float = 3.0) -> subprocess.Popen[bytes]:
        log = (self.logs / f"worker-{len(self.procs)}.log").open("wb")
        args = [
            sys.executable, str(WORKER_SCRIPT),
            "--url", url, "--prefix", prefix,
            "--concurrency", str(concurrency), "--vt", str(vt), "--ledger", str(self.ledger),
        ]  # fmt: skip
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.procs.append(proc)
        return proc

    def lines(self) -> list[LedgerLine]:
        out: list[LedgerLine] = []
        for path in self.ledger.glob("*.log"):
            text = path.read_text()
            # A line being appended can be read half-written (a write across a page boundary
            # lands in two steps): only what ends in a newline is a whole line yet.
            for raw in text[: text.rfind("\n") + 1].splitlines():
                job_id, pid, stalls, at = raw.split()
                out.append(LedgerLine(job_id, int(pid), int(stalls), float(at)))
        return out

    def done(self) -> set[str]:
        return {line.job_id for line in self.lines()}

    async def wait_for(self, check: Callable[[], Any], *, timeout: float, what: str) -> None:
        """Poll ``check`` (sync or async; it reads the ledger or asks Redis) until it is true.

        Fails after ``timeout`` seconds, or as soon as a worker exits that nobody killed.
        """
        deadline = time.monotonic() + timeout
        while True:
            ok = check()
            if inspect.isawaitable(ok):
                ok = await ok
            if ok:
                return
            for proc in self.procs:
                if proc.poll() is not None and proc.returncode != -signal.SIGKILL:
                    msg = f"worker {proc.pid} exited with {proc.returncode}; see {self.logs}"
                    raise AssertionError(msg)
            if time.monotonic() > deadline:
                msg = f"timed out after {timeout}s waiting for {what}; worker logs in {self.logs}"
                raise AssertionError(msg)
            await asyncio.sleep(0.05)  # the workers are other processes: polling their ledger is the wait

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
        for proc in self.procs:
            proc.wait(10)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    made = Workers(tmp_path)
    yield made
    made.stop_all()


@pytest.fixture
def fault_report(capsys: pytest.CaptureFixture[str]) -> Callable[..., None]:
    """``fault_report(name, **figures)`` prints one ``FAULT_REPORT {json}`` line, past pytest's capture."""

    def report(name: str, **figures: object) -> None:
        with capsys.disabled():
            print("\nFAULT_REPORT " + json.dumps({"scenario": name, **figures}, sort_keys=True))

    return report
