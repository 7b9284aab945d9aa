"""Fault tests: real worker processes, real redis-server processes, and things going wrong.

Workers are ``fault_worker.py`` subprocesses; each writes a ledger line per job it ran, on an
O_APPEND file that survives its SIGKILL and knows nothing of Redis. A job is "done" when it is in
the ledger; "lost" is enqueued but never done; a "duplicate" is a second ledger line for one job.
Every scenario asserts nothing is lost and prints its figures as a ``FAULT_REPORT {json}`` line.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from servers import ResetProxy
from tasqueue import Job, JobOpts, JobStatus, Server
from tasqueue._codec import decode_job
from tasqueue._keys import job_key
from tasqueue.errors import TasqueueError
from tasqueue_redis import QueueStats, RedisBroker, RedisResults

pytestmark = [pytest.mark.fault, pytest.mark.asyncio]

QUEUE = "faults"
IDLE = QueueStats(pending=0, delayed=0, active=0)


@asynccontextmanager
async def producer(url: str, prefix: str) -> AsyncIterator[Server]:
    """A Server that only enqueues and asks questions; the work happens in worker processes."""
    broker = RedisBroker.from_url(url, prefix=prefix)
    results = RedisResults.from_url(url, prefix=prefix)
    async with Server(broker, results, load_entrypoints=False) as srv:
        yield srv


def jobs(n: int, seconds: float) -> list[Job]:
    return [Job("work", str(seconds).encode(), JobOpts(queue=QUEUE)) for _ in range(n)]


async def statuses(srv: Server, ids: list[str]) -> Counter[str]:
    raws = await srv.results.get_many([job_key(i) for i in ids])
    return Counter("missing" if raw is None else decode_job(raw).status.value for raw in raws)


async def run_dry(srv: Server, workers, ids: list[str]) -> Counter[str]:
    """Wait until every one of ``ids`` is in ``workers``' ledger (the fixture) and the queue is empty; return their statuses."""
    await workers.wait_for(lambda: workers.done() >= set(ids), timeout=120, what="every enqueued job in the ledger")
    await workers.wait_for(lambda: _idle(srv.broker), timeout=30, what="an empty queue")
    return await statuses(srv, ids)


def tally(lines: list, ids: list[str]) -> dict[str, int]:
    runs = Counter(line.job_id for line in lines)
    return {
        "enqueued": len(ids),
        "done_unique": len(set(ids) & runs.keys()),
        "lost": len(set(ids) - runs.keys()),
        "dup_execs": sum(runs.values()) - len(runs),
        "max_execs": max(runs.values(), default=0),
    }


async def test_sigkill_of_a_busy_worker_loses_no_job(redis_server, prefix, workers, fault_report) -> None:
    """Two workers with 500 jobs each in flight; one is SIGKILLed at 30 %: its leases run out and the other finishes them."""
    n, vt = 6000, 3.0
    async with producer(redis_server.url, prefix) as srv:
        ids = await srv.enqueue_many(jobs(n, 0.25))
        victim = workers.start(redis_server.url, prefix, concurrency=500, vt=vt)
        workers.start(redis_server.url, prefix, concurrency=500, vt=vt)
        await workers.wait_for(lambda: len(workers.done()) >= n * 0.3, timeout=120, what="30% of the jobs")

        in_flight = (await srv.broker.stats(QUEUE)).active
        victim.kill()
        victim.wait()
        killed_at = time.time()
        final = await run_dry(srv, workers, ids)

    lines = workers.lines()
    figures = tally(lines, ids)
    redone = [line for line in lines if line.stalls > 0]
    fault_report(
        "worker_sigkill",
        **figures,
        workers=2,
        concurrency=500,
        visibility_timeout=vt,
        in_flight_at_kill=in_flight,
        victim_runs=sum(1 for line in lines if line.pid == victim.pid),
        redelivered_runs=len(redone),
        recovery_s=round(min(line.at for line in redone) - killed_at, 3) if redone else None,
        drain_s=round(max(line.at for line in lines) - killed_at, 3),
        statuses=dict(final),
    )
    assert figures["lost"] == 0
    assert final == Counter({"successful": n})
    # Duplicates are bounded by what the dead worker held: its handlers may have run without the ack.
    assert figures["dup_execs"] <= 500
    assert redone, "the victim's leased jobs must come back to the other worker"


async def test_redis_restart_mid_run_loses_nothing_acknowledged(make_redis, prefix, workers, fault_report) -> None:
    """Redis (appendonly) is SIGKILLed and stays down past a lease while workers run and a producer enqueues."""
    server = make_redis(appendonly=True)
    url = server.url
    n, late, vt = 3000, 300, 3.0
    downtime = 6.0  # past a lease, and past redis-py's own retries: the workers' backoff takes over
    async with producer(url, prefix) as srv:
        ids = await srv.enqueue_many(jobs(n, 0.01))
        workers.start(url, prefix, concurrency=50, vt=vt)
        workers.start(url, prefix, concurrency=50, vt=vt)
        await workers.wait_for(lambda: len(workers.done()) >= n * 0.3, timeout=120, what="30% of the jobs")

        acked: list[str] = []
        producer_errors = 0

        async def produce() -> None:
            # One by one, each retried under the same id until Redis confirms it: ids make retries safe.
            nonlocal producer_errors
            for k in range(late):
                job = Job("work", b"0.01", JobOpts(queue=QUEUE, id=f"late-{k}"))
                while True:
                    try:
                        acked.append(await srv.enqueue(job))
                        break
                    except TasqueueError:
                        producer_errors += 1
                        await asyncio.sleep(0.05)
                await asyncio.sleep(0.002)

        producing = asyncio.create_task(produce())
        await workers.wait_for(lambda: len(acked) >= 20, timeout=30, what="the producer to get going")
        killed_at = time.time()
        await asyncio.to_thread(server.kill)
        await asyncio.sleep(downtime)  # the fault itself: Redis stays down this long
        await asyncio.to_thread(server.start)
        up_at = time.time()
        await producing
        everything = [*ids, *acked]
        final = await run_dry(srv, workers, everything)

    lines = workers.lines()
    figures = tally(lines, everything)
    after = sorted(line.at for line in lines if line.at > up_at)
    fault_report(
        "redis_restart",
        **figures,
        appendonly=True,
        downtime_s=round(up_at - killed_at, 3),
        reconnect_s=round(after[0] - up_at, 3) if after else None,
        drain_s=round(max(line.at for line in lines) - up_at, 3),
        producer_retries=producer_errors,
        redelivered_runs=sum(1 for line in lines if line.stalls > 0),
        statuses=dict(final),
    )
    assert len(acked) == late
    assert figures["lost"] == 0
    assert final == Counter({"successful": len(everything)})
    assert all(proc.poll() is None for proc in workers.procs), "workers must ride out the restart"


async def test_connections_reset_again_and_again_lose_nothing(make_redis, prefix, workers, fault_report) -> None:
    """Every connection (workers' and producer's) is cut every 300 ms for 5 s while jobs flow."""
    server = make_redis(appendonly=True)
    proxy = ResetProxy(server.port)
    await proxy.start()
    url = f"redis://127.0.0.1:{proxy.port}/0"
    n, batch, vt = 1500, 25, 2.0
    async with producer(url, prefix) as srv:
        workers.start(url, prefix, concurrency=50, vt=vt)
        workers.start(url, prefix, concurrency=50, vt=vt)
        await workers.wait_for(lambda: _idle(srv.broker), timeout=30, what="the workers to connect")

        acked: list[str] = []
        producer_errors = 0

        async def produce() -> None:
            # Batches under ids of our own, each retried until Redis confirms it: ids make retries safe.
            nonlocal producer_errors
            for start in range(0, n, batch):
                chunk = [Job("work", b"0.01", JobOpts(queue=QUEUE, id=f"storm-{k}")) for k in range(start, start + batch)]
                while True:
                    try:
                        acked.extend(await srv.enqueue_many(chunk))
                        break
                    except TasqueueError:
                        producer_errors += 1
                await asyncio.sleep(0.08)  # pacing: the jobs arrive across the whole storm

        producing = asyncio.create_task(produce())
        storm_started = time.time()
        while time.time() - storm_started < 5.0:
            await asyncio.sleep(0.3)  # the fault's own rhythm: a cut every 300 ms
            proxy.reset()
        calm_at = time.time()
        await producing
        final = await run_dry(srv, workers, acked)
    await proxy.close()

    lines = workers.lines()
    figures = tally(lines, acked)
    fault_report(
        "connection_resets",
        **figures,
        resets=proxy.resets,
        connections_cut=proxy.dropped,
        producer_retries=producer_errors,
        jobs_done_during_storm=sum(1 for line in lines if storm_started <= line.at < calm_at),
        redelivered_runs=sum(1 for line in lines if line.stalls > 0),
        drain_s=round(max(line.at for line in lines) - calm_at, 3),
        statuses=dict(final),
    )
    assert sorted(acked) == sorted(f"storm-{k}" for k in range(n))
    assert figures["lost"] == 0
    assert final == Counter({"successful": n})
    assert proxy.dropped >= proxy.resets, "every reset cut live connections"
    assert all(proc.poll() is None for proc in workers.procs), "workers must ride out the resets"


async def test_poison_on_the_pending_list_is_parked_for_an_operator(redis_server, prefix, workers, fault_report) -> None:
    """Random bytes and an id without a payload, pushed straight onto the list, among good jobs."""
    garbage = os.urandom(64) + b"\xff\x00not a message"
    async with producer(redis_server.url, prefix) as srv:
        good = await srv.enqueue_many(jobs(100, 0.0))
        pending_key = f"{prefix}:{{{QUEUE}}}:pending"
        await srv.broker.client.lpush(pending_key, garbage, "ghost-job")
        more = await srv.enqueue_many(jobs(100, 0.0))
        worker = workers.start(redis_server.url, prefix, concurrency=10)

        raw_id = "raw:" + hashlib.sha1(garbage).hexdigest()
        await workers.wait_for(lambda: workers.done() >= {*good, *more}, timeout=60, what="the good jobs")
        await workers.wait_for(lambda: _failed(srv, {raw_id, "ghost-job"}), timeout=30, what="the poison on the failed list")
        parked = await srv.get_job(raw_id)
        ghost = await srv.get_job("ghost-job")
        after = await srv.enqueue(jobs(1, 0.0)[0])
        await workers.wait_for(lambda: after in workers.done(), timeout=30, what="a job after the poison")
        await workers.wait_for(lambda: _idle(srv.broker), timeout=30, what="an empty queue")

    assert parked.status is JobStatus.FAILED and parked.prev_err.startswith("UndecodableMessage")
    assert parked.job.payload == garbage  # kept byte for byte
    assert ghost.status is JobStatus.FAILED and ghost.job.payload == b"ghost-job"
    assert worker.poll() is None
    fault_report(
        "poison_message",
        good_done=len(workers.done() & {*good, *more, after}),
        parked_failed=2,
        parked_ids=[raw_id, "ghost-job"],
        worker_alive=worker.poll() is None,
    )


async def test_a_handler_that_outlives_its_lease_runs_once(redis_server, prefix, workers, fault_report) -> None:
    """Jobs running 3.5 leases each, renewed by the heartbeat, with an idle second worker waiting to steal."""
    n, vt, seconds = 10, 1.0, 3.5
    async with producer(redis_server.url, prefix) as srv:
        ids = await srv.enqueue_many(jobs(n, seconds))
        workers.start(redis_server.url, prefix, concurrency=5, vt=vt)
        workers.start(redis_server.url, prefix, concurrency=5, vt=vt)
        await workers.wait_for(lambda: workers.done() >= set(ids), timeout=60, what="the long jobs")
        # A second run of a wrongly reaped job would hold a lease (or wait to) until it finished
        # and wrote its ledger line: an empty queue means every run there was is counted.
        await workers.wait_for(lambda: _idle(srv.broker), timeout=30, what="an empty queue")
        final = await statuses(srv, ids)

    lines = workers.lines()
    figures = tally(lines, ids)
    fault_report("long_handler", **figures, visibility_timeout=vt, handler_s=seconds, stalls=sum(line.stalls for line in lines))
    assert figures["lost"] == 0 and figures["dup_execs"] == 0
    assert all(line.stalls == 0 for line in lines)
    assert final == Counter({"successful": n})


async def test_a_redis_pause_longer_than_the_lease_reaps_no_live_lease(make_redis, prefix, workers, fault_report) -> None:
    """SIGSTOP Redis for longer than a lease: leases look expired only because nobody could renew them."""
    server = make_redis()
    url = server.url
    n, vt = 3000, 3.0
    pause = vt + 1.5  # longer than a lease and its grace, shorter than the 5 s socket timeout
    async with producer(url, prefix) as srv:
        ids = await srv.enqueue_many(jobs(n, 0.05))
        workers.start(url, prefix, concurrency=100, vt=vt)
        workers.start(url, prefix, concurrency=100, vt=vt)
        await workers.wait_for(lambda: len(workers.done()) >= n * 0.3, timeout=120, what="30% of the jobs")
        in_flight = (await srv.broker.stats(QUEUE)).active
        server.pause()
        await asyncio.sleep(pause)  # the fault itself: Redis stays stopped this long
        server.resume()
        resumed_at = time.time()
        final = await run_dry(srv, workers, ids)

    lines = workers.lines()
    figures = tally(lines, ids)
    fault_report(
        "redis_pause",
        **figures,
        pause_s=pause,
        visibility_timeout=vt,
        in_flight_at_pause=in_flight,
        redelivered_runs=sum(1 for line in lines if line.stalls > 0),
        drain_s=round(max(line.at for line in lines) - resumed_at, 3),
        statuses=dict(final),
    )
    assert figures["lost"] == 0
    assert figures["dup_execs"] == 0, "a pause of Redis must not make live leases look dead"
    assert final == Counter({"successful": n})


async def _idle(broker: RedisBroker) -> bool:
    return await broker.stats(QUEUE) == IDLE


async def _failed(srv: Server, ids: set[str]) -> bool:
    return ids <= set(await srv.get_failed())
