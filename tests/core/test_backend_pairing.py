"""A broker URL alone names both halves where its plugin has both; a pair that cannot share jobs warns."""

from __future__ import annotations

import warnings
from typing import Any

import pytest

from tasqueue import ConfigurationError, ConfigurationWarning, Job, JobCtx, JobStatus, Server, hookimpl
from tasqueue.hookspecs import RegisterBroker, RegisterResults
from tasqueue.memory import MemoryBroker, MemoryResults
from tasqueue.testing import running
from tasqueue.urls import parse_backend_url, seconds


class SharedBroker(MemoryBroker):
    """Stands in for a broker that other processes reach (Redis, NATS): not process-local."""

    process_local = False


class SharedResults(MemoryResults):
    process_local = False


class BothHalves:
    """A plugin serving ``both://`` with a broker and a results store, like tasqueue-redis."""

    def __init__(self) -> None:
        self.results_urls: list[str] = []

    @hookimpl
    def tasqueue_register_brokers(self, register: RegisterBroker) -> None:
        register("both", lambda url, **options: SharedBroker())

    @hookimpl
    def tasqueue_register_results(self, register: RegisterResults) -> None:
        def make(url: str, **options: Any) -> SharedResults:
            self.results_urls.append(url)
            parse_backend_url(url, {"expiry": seconds}, options, what="both:// results store")
            return SharedResults()

        register("both", make)


class BrokerOnly:
    """A plugin serving ``lonely://`` with a broker only."""

    @hookimpl
    def tasqueue_register_brokers(self, register: RegisterBroker) -> None:
        register("lonely", lambda url, **options: SharedBroker())


def test_a_broker_url_alone_keeps_results_on_the_same_backend() -> None:
    plugin = BothHalves()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        srv = Server("both://host:1/0", plugins=[plugin], load_entrypoints=False)
    assert isinstance(srv.results, SharedResults)
    assert plugin.results_urls == ["both://host:1/0"]


@pytest.mark.asyncio
async def test_two_servers_on_one_memory_name_share_results_too() -> None:
    worker = Server("memory://pairing", load_entrypoints=False)
    producer = Server("memory://pairing", load_entrypoints=False)

    @worker.task("echo")
    async def echo(payload: bytes, ctx: JobCtx) -> bytes:
        return payload

    async with running(worker):
        job_id = await producer.enqueue(Job("echo", b"hi"))
        assert (await producer.wait(job_id, timeout=10)).status is JobStatus.SUCCESSFUL
        assert await producer.get_result(job_id) == b"hi"


def test_a_private_results_store_beside_a_shared_broker_warns() -> None:
    with pytest.warns(ConfigurationWarning, match=r"lives in this process only.*Server\(broker=url, results=url\)"):
        srv = Server("lonely://host", plugins=[BrokerOnly()], load_entrypoints=False)
    assert isinstance(srv.results, MemoryResults)
    with pytest.warns(ConfigurationWarning, match="SharedBroker"):
        Server(SharedBroker(), load_entrypoints=False)
    with pytest.warns(ConfigurationWarning, match="MemoryResults"):
        Server("both://host", "memory://", plugins=[BothHalves()], load_entrypoints=False)


def test_pairs_that_share_or_stay_in_one_process_do_not_warn() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Server(load_entrypoints=False)
        Server("memory://", "memory://", load_entrypoints=False)
        Server(SharedBroker(), SharedResults(), load_entrypoints=False)
        Server(MemoryBroker(), SharedResults(), load_entrypoints=False)  # jobs stay here; outcomes are shared


def test_a_shared_url_the_results_store_refuses_says_how_to_fix_it() -> None:
    with pytest.raises(ConfigurationError, match=r"without results=.*unknown option 'visibility_timeout'.*Pass results="):
        Server("both://host?visibility_timeout=5", plugins=[BothHalves()], load_entrypoints=False)
