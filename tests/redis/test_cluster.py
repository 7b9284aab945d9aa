"""Redis Cluster: the whole conformance kit again, on three masters.

Every key of one queue carries the queue's hash tag, so each broker script runs on one slot;
results keys are spread over the nodes and written with single-key scripts in one pipeline.
"""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio

from tasqueue import Chain, ChainMessage, Job, JobCtx, JobOpts, JobStatus, Server, TaskOpts
from tasqueue.testing import BrokerSuite, Capabilities, ResultsFactory, ResultsSuite, ServerSuite, eventually, running
from tasqueue_redis import QueueStats, RedisBroker, RedisResults

# As on a single Redis (test_conformance.py), redis-py's connections belong to the event loop
# they were opened on: declared, not left to fail.
CLUSTER = Capabilities(any_loop=False)


class TestClusterBroker(BrokerSuite):
    capabilities = CLUSTER

    @pytest_asyncio.fixture
    async def broker(self, cluster_broker: RedisBroker) -> RedisBroker:
        return cluster_broker


class TestClusterResults(ResultsSuite):
    capabilities = CLUSTER

    @pytest_asyncio.fixture
    async def results_factory(self, cluster_results_factory: ResultsFactory) -> ResultsFactory:
        return cluster_results_factory


class TestClusterServer(ServerSuite):
    capabilities = CLUSTER

    @pytest_asyncio.fixture
    async def broker(self, cluster_broker: RedisBroker) -> RedisBroker:
        return cluster_broker

    @pytest_asyncio.fixture
    async def results_factory(self, cluster_results_factory: ResultsFactory) -> ResultsFactory:
        return cluster_results_factory


@pytest.mark.asyncio
async def test_jobs_on_many_queues_run_through_every_node(redis_cluster, prefix: str) -> None:
    url = f"{redis_cluster.url}&prefix={prefix}"
    queues = [f"q{n}" for n in range(6)]
    async with Server(broker=url, results=url) as srv:
        assert isinstance(srv.broker, RedisBroker) and isinstance(srv.results, RedisResults)
        client = srv.broker.client
        await client.initialize()
        nodes = {client.get_node_from_key(f"{prefix}:{{{q}}}:pending").name for q in queues}
        assert len(nodes) > 1  # the queues really are spread over the masters

        async def echo(payload: bytes, ctx: JobCtx) -> bytes:
            return payload

        for q in queues:
            srv.register_task(f"echo-{q}", echo, TaskOpts(queue=q, concurrency=5))
        ids = await srv.enqueue_many([Job(f"echo-{q}", f"{q}-{n}".encode(), JobOpts(queue=q)) for q in queues for n in range(50)])
        later = await srv.enqueue(Job("echo-q1", b"later", JobOpts(queue="q1", eta=datetime.now(UTC) + timedelta(seconds=0.5))))
        chain = await srv.enqueue_chain(
            Chain([Job("echo-q0", b"a", JobOpts(queue="q0")), Job("echo-q5", b"b", JobOpts(queue="q5"))])
        )
        async with running(srv):
            for job_id in [*ids, later]:
                assert (await srv.wait(job_id, timeout=30)).status is JobStatus.SUCCESSFUL
            assert (await eventually(lambda: _finished(srv.get_chain(chain)))).status is JobStatus.SUCCESSFUL
        assert set(ids) <= set(await srv.get_success())
        assert await srv.get_result(ids[0]) == b"q0-0"
        for q in queues:
            assert await srv.broker.stats(q) == QueueStats(pending=0, delayed=0, active=0)


async def _finished(doc: Awaitable[ChainMessage]) -> ChainMessage | None:
    found = await doc
    return found if found.status in (JobStatus.SUCCESSFUL, JobStatus.FAILED) else None
