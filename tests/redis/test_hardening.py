"""Adversarial cases against real redis-servers: lost replies, half-sent batches, a silent Redis,
a restart from an older snapshot, a full memory, a Cluster, a long queue.

Each test reproduces a way the Redis backend used to run a job twice, record it wrongly, hang
or stall Redis; the fault tests print their figures as a ``FAULT_REPORT {json}`` line.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import pytest
import redis.asyncio as redis

from servers import ResetProxy
from tasqueue import EnqueueError, Job, JobCtx, JobOpts, JobStatus, Server, TaskOpts
from tasqueue._codec import decode_job
from tasqueue._keys import job_key, result_key
from tasqueue.broker import PENDING_LIMIT, Envelope
from tasqueue.errors import BrokerError, ConfigurationError, NotFoundError
from tasqueue.inspector import error_key
from tasqueue.results import Write
from tasqueue.testing import eventually, running
from tasqueue_redis import QueueStats, RedisBroker, RedisResults

pytestmark = pytest.mark.asyncio
Q = "hard"
IDLE = QueueStats(pending=0, delayed=0, active=0)


@asynccontextmanager
async def server_on(broker_url: str, results_url: str, prefix: str, **options: Any) -> AsyncIterator[Server]:
    broker = RedisBroker.from_url(broker_url, prefix=prefix, **options)
    results = RedisResults.from_url(results_url, prefix=prefix)
    async with Server(broker, results, load_entrypoints=False, shutdown_timeout=1.0) as srv:
        yield srv


def counting(srv: Server, runs: Counter[str], *, concurrency: int = 20) -> None:
    """Register ``work``: counts its runs per job id; a payload of b"hold" waits until cancelled."""

    async def work(payload: bytes, ctx: JobCtx) -> None:
        runs[ctx.meta.id] += 1
        if payload == b"hold":
            await asyncio.Event().wait()

    srv.register_task("work", work, TaskOpts(queue=Q, concurrency=concurrency))


def idle(broker: RedisBroker) -> Callable[[], Any]:
    async def check() -> bool:
        return await broker.stats(Q) == IDLE

    return check


def figures(runs: Counter[str], ids: list[str]) -> dict[str, int]:
    return {
        "jobs": len(ids),
        "lost": sum(1 for i in ids if runs[i] == 0),
        "run_twice": sum(1 for i in ids if runs[i] > 1),
        "runs": sum(runs.values()),
    }


# ---- case 1: a lost enqueue reply ------------------------------------------------------------


@pytest.mark.fault
async def test_a_lost_enqueue_reply_never_runs_a_finished_job_again(make_redis, prefix: str, fault_report) -> None:
    """Each enqueue runs in Redis but its reply is lost; the worker runs and acks the job before
    the producer, timing out, sends the same call again."""
    server = make_redis()
    proxy = ResetProxy(server.port)
    await proxy.start()
    runs: Counter[str] = Counter()
    jobs = [Job("work", b"", JobOpts(queue=Q, id=f"given-{k}" if k % 2 else None)) for k in range(10)]
    async with (
        server_on(server.url, server.url, prefix) as worker,
        server_on(f"redis://127.0.0.1:{proxy.port}/0", server.url, prefix, socket_timeout=1) as producer,
    ):
        counting(worker, runs)
        # Warm up: the script is loaded and a connection per call is open, so that only the
        # replies of the calls themselves are lost (not those of a connection's handshake).
        await asyncio.gather(*(producer.broker.enqueue("warm-up", [Envelope(f"w{k}", b"")]) for k in range(len(jobs))))
        async with running(worker):
            proxy.drop_replies = True
            sending = [asyncio.create_task(producer.enqueue(job)) for job in jobs]
            await eventually(lambda: sum(runs.values()) >= len(jobs))
            await eventually(idle(worker.broker))  # run and acked, while the producer still waits
            proxy.drop_replies = False  # the producer times out and sends each call again
            ids = await asyncio.gather(*sending)
            await eventually(idle(worker.broker))
    await proxy.close()
    result = figures(runs, ids)
    fault_report("lost_enqueue_reply", **result, replies_dropped=proxy.replies_dropped)
    assert proxy.replies_dropped >= len(jobs)
    assert result["lost"] == 0
    assert result["run_twice"] == 0, f"a replayed enqueue ran finished jobs again: {dict(runs)}"


# ---- case 3: a half-published enqueue_many ---------------------------------------------------


@pytest.mark.fault
async def test_a_half_published_enqueue_many_says_which_jobs_landed(make_redis, prefix: str, fault_report) -> None:
    """The connection dies in the middle of the third 500-job chunk of one enqueue_many."""
    server = make_redis()
    proxy = ResetProxy(server.port)
    await proxy.start()
    runs: Counter[str] = Counter()
    jobs = [Job("work", b"x" * 1000, JobOpts(queue=Q, id=f"batch-{k}")) for k in range(2000)]
    ids = [f"batch-{k}" for k in range(2000)]
    url = f"redis://127.0.0.1:{proxy.port}/0?retries=1&socket_timeout=1"
    async with server_on(url, server.url, prefix) as producer, server_on(server.url, server.url, prefix) as worker:
        # A rehearsal on another queue measures what one 500-job chunk costs on the wire.
        await producer.enqueue_many([msgspec.structs.replace(j, opts=JobOpts(queue="rehearsal")) for j in jobs[:500]])
        chunk = proxy.bytes_to_server
        await producer.enqueue_many([msgspec.structs.replace(j, opts=JobOpts(queue="rehearsal")) for j in jobs[:500]])
        chunk = proxy.bytes_to_server - chunk  # the second time, without loading the script
        proxy.pass_bytes = int(chunk * 2.5)  # two chunks pass, the third is cut off half-way
        with pytest.raises(EnqueueError) as caught:
            await producer.enqueue_many(jobs)
        error = caught.value
        assert list(error.enqueued) == ids[:1000]
        assert list(error.unknown) == ids[1000:1500]
        assert list(error.not_enqueued) == ids[1500:]
        assert "published 1000 of 2000" in str(error)
        # Records: kept for what was (or may have been) published, gone for the rest.
        assert (await producer.get_job(ids[0])).status is JobStatus.QUEUED
        assert (await producer.get_job(ids[1000])).status is JobStatus.QUEUED
        with pytest.raises(NotFoundError):
            await producer.get_job(ids[1500])

        # The caller does as the error says: the unknown and unpublished ones again, same ids.
        proxy.blackhole = False
        proxy.pass_bytes = None
        retry = [job for job in jobs if job.opts.id in {*error.unknown, *error.not_enqueued}]
        await producer.enqueue_many(retry)
        counting(worker, runs, concurrency=50)
        async with running(worker):
            await eventually(lambda: all(runs[i] for i in ids), timeout=60)
            await eventually(idle(worker.broker))
    await proxy.close()
    result = figures(runs, ids)
    fault_report("half_published_enqueue_many", **result, enqueued=len(error.enqueued), unknown=len(error.unknown))
    assert result["lost"] == 0 and result["run_twice"] == 0


# ---- case 4: stop while Redis does not answer ------------------------------------------------


@pytest.mark.fault
async def test_stop_is_bounded_while_redis_does_not_answer(make_redis, prefix: str, fault_report) -> None:
    """Quick jobs then jobs that hold their slots; Redis goes silent; the worker is stopped."""
    server = make_redis()
    proxy = ResetProxy(server.port)
    await proxy.start()
    runs: Counter[str] = Counter()
    url = f"redis://127.0.0.1:{proxy.port}/0"
    async with server_on(server.url, server.url, prefix) as producer:
        quick = await producer.enqueue_many([Job("work", b"", JobOpts(queue=Q)) for _ in range(2000)])
        held = await producer.enqueue_many([Job("work", b"hold", JobOpts(queue=Q)) for _ in range(40)])
        async with server_on(url, url, prefix) as worker:
            counting(worker, runs, concurrency=10)
            task = asyncio.create_task(worker.start(handle_signals=False))
            await eventually(lambda: all(runs[i] for i in quick) and sum(runs[i] for i in held) >= 10, timeout=60)
            leased = (await producer.broker.stats(Q)).active
            proxy.blackhole = True  # Redis stops answering every connection of the worker
            started = time.monotonic()
            await worker.stop()
            stopped = time.monotonic() - started
            await task
        closed = time.monotonic() - started
        proxy.blackhole = False
    await proxy.close()
    fault_report(
        "stop_while_redis_is_silent",
        shutdown_timeout=1.0,
        leased_at_stop=leased,
        stop_s=round(stopped, 2),
        stop_and_close_s=round(closed, 2),
    )
    # The promise: shutdown_timeout (1 s) plus the stop bound (5 s), then closing (2 s).
    assert stopped < 1.0 + 5.0 + 1.5, f"stop took {stopped:.1f}s while Redis was silent"
    assert closed < 1.0 + 5.0 + 2.0 + 2.0, f"stop and close took {closed:.1f}s while Redis was silent"


# ---- case 5: a restart from an older snapshot ------------------------------------------------


@pytest.mark.fault
async def test_lease_tokens_never_repeat_after_a_restart_from_an_older_snapshot(make_redis, prefix: str) -> None:
    server = make_redis()  # no AOF: a restart loads the last RDB snapshot
    stale_worker = RedisBroker.from_url(server.url, prefix=prefix, visibility_timeout=30)
    await stale_worker.enqueue(Q, [Envelope("x", b"1")])
    await stale_worker.client.save()  # the snapshot: x waiting, no token handed out yet
    (stale,) = await stale_worker.fetch(Q, 1, timeout=1)
    await asyncio.to_thread(server.restart)  # SIGKILL, then start from the snapshot: the lease is forgotten
    new_worker = RedisBroker.from_url(server.url, prefix=prefix, visibility_timeout=30)
    (fresh,) = await new_worker.fetch(Q, 1, timeout=5)
    assert (fresh.id, fresh.deliveries) == ("x", 1)
    assert fresh.receipt != stale.receipt
    # The stale worker finishes and acks: that must not settle the new lease.
    await stale_worker.ack(Q, [stale])
    assert await new_worker.extend(Q, [fresh]) == []
    assert await new_worker.stats(Q) == QueueStats(pending=0, delayed=0, active=1)
    await new_worker.ack(Q, [fresh])
    await stale_worker.close()
    await new_worker.close()


# ---- case 7: out of memory -------------------------------------------------------------------


@pytest.mark.fault
async def test_a_full_redis_leases_nothing_it_could_not_record(make_redis, prefix: str, fault_report) -> None:
    server = make_redis()
    admin = redis.Redis.from_url(server.url)
    runs: Counter[str] = Counter()
    async with server_on(server.url, server.url, prefix) as srv:
        ids = await srv.enqueue_many([Job("work", b"", JobOpts(queue=Q)) for _ in range(3000)])
        counting(srv, runs, concurrency=5)
        async with running(srv):
            await eventually(lambda: sum(runs.values()) >= 200, timeout=30)
            used = int((await admin.info("memory"))["used_memory"])
            await admin.config_set("maxmemory", str(used // 2))  # full: under noeviction nothing more fits
            full_at = sum(runs.values())
            leased_then = {i for i in ids if runs[i]} | set(await _active_ids(admin, prefix))
            with pytest.raises(BrokerError, match="Redis is out of memory") as caught:
                await srv.enqueue(Job("work", b"", JobOpts(queue=Q)))
            await asyncio.sleep(2.0)  # the fault itself: memory stays full this long
            started_while_full = {i for i in ids if runs[i]} - leased_then
            await admin.config_set("maxmemory", "0")
            await eventually(lambda: all(runs[i] for i in ids), timeout=60)
            await eventually(idle(srv.broker))
        statuses = Counter(decode_job(raw).status for raw in await srv.results.get_many([job_key(i) for i in ids]) if raw)
    await admin.aclose()
    result = figures(runs, ids)
    fault_report(
        "out_of_memory",
        **result,
        done_before_full=full_at,
        started_while_full=len(started_while_full),
        enqueue_error=str(caught.value)[:120],
    )
    assert not started_while_full, f"{len(started_while_full)} job(s) were leased while no outcome could be stored"
    assert result["lost"] == 0
    assert statuses == Counter({JobStatus.SUCCESSFUL: len(ids)})


async def _active_ids(admin: redis.Redis, prefix: str) -> list[str]:
    return [i.decode() for i in await admin.zrange(f"{prefix}:{{{Q}}}:active", 0, -1)]


# ---- case 10: queue names and Cluster slots --------------------------------------------------


async def test_a_queue_name_that_would_scatter_its_keys_is_refused(cluster_broker: RedisBroker) -> None:
    with pytest.raises(ConfigurationError, match=r"queue name '\}orders'.*rename the queue"):
        await cluster_broker.enqueue("}orders", [Envelope("a", b"1")])
    with pytest.raises(ConfigurationError, match=r"queue name '\}orders'"):
        await cluster_broker.fetch("}orders", 1, timeout=0.1)
    # A brace elsewhere is fine: the tag is whatever lies between the first braces.
    await cluster_broker.enqueue("a}b{c", [Envelope("a", b"1")])
    (got,) = await cluster_broker.fetch("a}b{c", 1, timeout=1)
    await cluster_broker.ack("a}b{c", [got])


# ---- case 11: listing a long queue -----------------------------------------------------------


async def test_get_pending_reads_a_bounded_page_of_the_oldest(redis_broker: RedisBroker) -> None:
    n = PENDING_LIMIT * 3
    await redis_broker.enqueue(Q, [Envelope(f"m{i}", b"%d" % i) for i in range(n)])
    await redis_broker.enqueue(Q, [Envelope("later", b"later", 30.0)])
    pending = await redis_broker.get_pending(Q)
    assert pending == [b"%d" % i for i in range(PENDING_LIMIT)]
    # Once the ready ones fit, the delayed ones follow them.
    got = await redis_broker.fetch(Q, n, timeout=1)
    while len(got) < n - 10:
        got += await redis_broker.fetch(Q, n, timeout=1)
    tail = await redis_broker.get_pending(Q)
    assert tail[-1] == b"later" and len(tail) == n - len(got) + 1


# ---- case 8: records of finished jobs bounded by count ---------------------------------------


@pytest.mark.parametrize("where", ["redis_server", "redis_cluster"])
async def test_records_of_finished_jobs_leave_with_their_list_entry(where: str, request, prefix: str) -> None:
    url = request.getfixturevalue(where).url
    store = RedisResults.from_url(url, prefix=prefix, list_limit=3)
    ids = [f"j{n}" for n in range(5)]
    for n, i in enumerate(ids):
        writes = [Write(job_key(i), b"record"), Write(result_key(i), b"result")]
        if n % 2:
            writes.append(Write(error_key(i), b"traceback"))
        await store.set_many(writes, success=[i])
    await store.set_many([Write(job_key("f0"), b"record")], failed=["f0"])
    assert await store.get_success() == ids[2:]
    keys = [make(i) for i in ids for make in (job_key, result_key)]
    found = dict(zip(keys, await store.get_many(keys), strict=True))
    assert [k for k, v in found.items() if v is None] == [job_key("j0"), result_key("j0"), job_key("j1"), result_key("j1")]
    assert await store.get_many([error_key("j1"), error_key("j3")]) == [None, b"traceback"]
    assert await store.get_many([job_key("f0")]) == [b"record"]  # the other list keeps its own count
    await store.close()
