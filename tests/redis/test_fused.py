"""The fused calls of a broker and a results store on one Redis: a job recorded and published in one
script, and a batch of outcomes written and acked in one script."""

from __future__ import annotations

import pytest

from tasqueue import Job, JobOpts, JobStatus, Server
from tasqueue.broker import Delivery, Envelope
from tasqueue.errors import BrokerError
from tasqueue.memory import MemoryResults
from tasqueue.results import Write
from tasqueue_redis import RedisBroker, RedisResults, _lua

pytestmark = pytest.mark.asyncio


def server(broker_url: str, results_url: str, prefix: str) -> Server:
    return Server(RedisBroker.from_url(broker_url, prefix=prefix), RedisResults.from_url(results_url, prefix=prefix))


async def test_one_url_fuses_and_another_database_does_not(redis_server, prefix: str) -> None:
    base = redis_server.url.rsplit("/", 1)[0]
    async with server(f"{base}/0", f"{base}/0", prefix) as same:
        assert same._publisher._fused() is not None
        job_id = await same.enqueue(Job("t", b"x"))
        assert (await same.get_job(job_id)).status is JobStatus.QUEUED
        assert [m.id for m in await same.get_pending()] == [job_id]
    async with server(f"{base}/0", f"{base}/1", prefix) as apart:
        assert apart._publisher._fused() is None
        job_id = await apart.enqueue(Job("t", b"x"))  # the two-call path still works
        assert (await apart.get_job(job_id)).status is JobStatus.QUEUED


async def test_a_failed_publish_leaves_no_record(redis_server, prefix: str) -> None:
    async with server(redis_server.url, redis_server.url, prefix) as srv:
        assert isinstance(srv.broker, RedisBroker)
        # A queue whose list key holds a string: the script's LPUSH fails after it wrote the record.
        await srv.broker.client.set(f"{prefix}:{{broken}}:pending", b"not a list")
        ids_before = set(await srv.broker.client.keys(f"{prefix}:job:*"))
        with pytest.raises(BrokerError, match="broken"):
            await srv.enqueue(Job("t", b"x", JobOpts(queue="broken")))
        # Redis undoes nothing a failing script did (it wrote the record first): the core does.
        assert set(await srv.broker.client.keys(f"{prefix}:job:*")) == ids_before


async def test_records_keep_the_store_expiry_unless_due_later_and_schedules_persist(redis_server, prefix: str) -> None:
    async with server(redis_server.url, redis_server.url, prefix) as srv:
        assert srv._publisher._fused() is not None
        client = srv.broker.client  # type: ignore[attr-defined]
        plain = await srv.enqueue(Job("t", b"x"))
        first_run = await srv.enqueue(Job("t", b"x", JobOpts(schedule="*/5 * * * *")))
        assert 0 < await client.pttl(f"{prefix}:job:{plain}") <= 86_400_000
        assert await client.pttl(f"{prefix}:job:{first_run}") == -1  # due later: kept until it runs
        assert await client.pttl(f"{prefix}:schedule:{first_run}") == -1  # until cancelled
        assert (await srv.get_job(first_run)).status is JobStatus.QUEUED


async def test_a_fused_enqueue_refuses_versioned_writes(redis_server, prefix: str) -> None:
    broker = RedisBroker.from_url(redis_server.url, prefix=prefix)
    results = RedisResults.from_url(redis_server.url, prefix=prefix)
    try:
        fused = broker.fused_enqueue(results)
        assert fused is not None
        with pytest.raises(ValueError, match="version 5"):
            await fused("q", [], [Write("job:a", b"x", version=5)])
    finally:
        await broker.close()
        await results.close()
        assert broker._lanes is not None and broker._lanes._made == []  # closed once both owners closed


async def test_a_replayed_fused_call_writes_nothing_again(redis_server, prefix: str) -> None:
    """A call resent after a lost reply must not bring back what happened since (a cancelled schedule)."""
    broker = RedisBroker.from_url(redis_server.url, prefix=prefix)
    results = RedisResults.from_url(redis_server.url, prefix=prefix)
    try:
        keys = broker._queue("q")
        record_keys, args = results._fused_records([Write("schedule:s1", b"m", persist=True)])
        args += [30_000, "j1", b"m", 0]
        call = [*record_keys, *keys.enqueue, keys.sent + "call-1"]
        assert await _lua.ENQUEUE_RECORDS(broker.client, call, list(args)) == 1
        await broker.client.delete(f"{prefix}:schedule:s1")  # cancelled meanwhile
        assert await _lua.ENQUEUE_RECORDS(broker.client, call, list(args)) == -1
        assert await broker.client.exists(f"{prefix}:schedule:s1") == 0
    finally:
        await broker.close()
        await results.close()


# ---- the fused settle: a batch of outcomes written and their deliveries acked in one script ----


async def test_a_settle_writes_then_acks_and_fences_each_ack(redis_server, prefix: str) -> None:
    broker = RedisBroker.from_url(redis_server.url, prefix=prefix, visibility_timeout=30)
    results = RedisResults.from_url(redis_server.url, prefix=prefix)
    try:
        settle = broker.fused_settle(results)
        assert settle is not None
        await broker.enqueue("q", [Envelope("a", b"1"), Envelope("b", b"2")])
        a, b = await broker.fetch("q", 2, timeout=1)
        stale = Delivery(b.id, b.data, b.deliveries, receipt="999999")  # a lease this worker lost
        writes = [
            Write("job:a", b"done", version=2, success="a"),
            Write("job:b", b"done", version=2, success="b"),
            Write("job:c", b"new", version=0),
        ]
        await results.set("job:b", b"newer", version=3)  # another worker got further with b
        assert await settle(writes, {"q": [a, stale]}) == [True, False, True]
        assert await results.get_success() == ["a"]  # the lost write listed nothing
        assert (await broker.stats("q")).active == 1  # a acked; b's real lease untouched
        assert await broker.extend("q", [a, b]) == [a]  # a's lease is gone, b's renewed
        # A replayed call reports the same writes and acks nothing more.
        assert await settle(writes, {"q": [a, stale]}) == [True, False, True]
        assert (await broker.stats("q")).active == 1
    finally:
        await broker.close()
        await results.close()


async def test_a_settle_wakes_waiters_of_the_jobs_it_finishes(redis_server, prefix: str) -> None:
    async with server(redis_server.url, redis_server.url, prefix) as srv:
        assert isinstance(srv.broker, RedisBroker) and isinstance(srv.results, RedisResults)
        settle = srv.broker.fused_settle(srv.results)
        assert settle is not None
        async with srv.results.watch(["j1"]) as watch:
            assert watch is not None
            assert await settle([Write("job:j1", b"rec", version=1, success="j1")], {}) == [True]
            assert await watch.wait(timeout=10) is True


async def test_a_settle_is_offered_only_for_a_store_on_the_same_connections(redis_server, prefix: str) -> None:
    base = redis_server.url.rsplit("/", 1)[0]
    broker = RedisBroker.from_url(f"{base}/0", prefix=prefix)
    same = RedisResults.from_url(f"{base}/0", prefix=prefix)
    other = RedisResults.from_url(f"{base}/1", prefix=prefix)
    try:
        assert broker.fused_settle(same) is not None
        assert broker.fused_settle(other) is None
        assert broker.fused_settle(MemoryResults()) is None
    finally:
        for closing in (broker, same, other):
            await closing.close()
