"""Fault tests on NATS: real worker processes, real nats-servers, and things going wrong.

Workers are ``fault_worker.py`` subprocesses; each writes a ledger line per job it ran, on an
O_APPEND file that survives its SIGKILL and knows nothing of NATS. A job is "done" when it is in
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

from tasqueue import Job, JobOpts, JobStatus, Server
from tasqueue._codec import decode_job
from tasqueue._keys import job_key
from tasqueue.errors import TasqueueError
from tasqueue.testing import eventually
from tasqueue_nats import NatsBroker, NatsResults

pytestmark = [pytest.mark.fault, pytest.mark.asyncio]

QUEUE = "faults"


@asynccontextmanager
async def producer(url: str, prefix: str, **options: object) -> AsyncIterator[Server]:
    """A Server that only enqueues and asks questions; the work happens in worker processes."""
    broker = NatsBroker(url, prefix=prefix, **options)  # type: ignore[arg-type]
    results = NatsResults(url, prefix=prefix, **options)  # type: ignore[arg-type]
    async with Server(broker, results, load_entrypoints=False) as srv:
        yield srv


def jobs(n: int, seconds: float) -> list[Job]:
    return [Job("work", str(seconds).encode(), JobOpts(queue=QUEUE)) for _ in range(n)]


async def held(srv: Server) -> int:
    """Messages the queue's stream holds: ready, leased or delayed (acked ones are deleted)."""
    broker = srv.broker
    assert isinstance(broker, NatsBroker)
    info = await broker.client.api(f"STREAM.INFO.{broker._queue(QUEUE).stream}")
    return int(info["state"]["messages"])


async def in_flight(srv: Server) -> int:
    broker = srv.broker
    assert isinstance(broker, NatsBroker)
    info = await broker.client.api(f"CONSUMER.INFO.{broker._queue(QUEUE).stream}.work")
    return int(info["num_ack_pending"])


async def statuses(srv: Server, ids: list[str]) -> Counter[str]:
    raws = await srv.results.get_many([job_key(i) for i in ids])
    return Counter("missing" if raw is None else decode_job(raw).status.value for raw in raws)


async def run_dry(srv: Server, workers, ids: list[str]) -> Counter[str]:
    """Wait until every one of ``ids`` is in the ledger and the queue holds nothing; return their statuses."""
    await workers.wait_for(lambda: workers.done() >= set(ids), timeout=120, what="every enqueued job in the ledger")
    await workers.wait_for(lambda: _idle(srv), timeout=60, what="an empty queue")
    return await statuses(srv, ids)


async def _idle(srv: Server) -> bool:
    """Nothing waits, nothing is leased: the work consumer has handed out and seen acked every message."""
    broker = srv.broker
    assert isinstance(broker, NatsBroker)
    try:
        info = await broker.client.api(f"CONSUMER.INFO.{broker._queue(QUEUE).stream}.work")
    except TasqueueError:
        return False  # the server is still coming back
    return info["num_pending"] == 0 and info["num_ack_pending"] == 0


def tally(lines: list, ids: list[str]) -> dict[str, int]:
    runs = Counter(line.job_id for line in lines)
    return {
        "enqueued": len(ids),
        "done_unique": len(set(ids) & runs.keys()),
        "lost": len(set(ids) - runs.keys()),
        "dup_execs": sum(runs.values()) - len(runs),
        "max_execs": max(runs.values(), default=0),
    }


async def test_sigkill_of_a_busy_worker_loses_no_job(make_nats, prefix, workers, fault_report) -> None:
    """Two workers with 500 jobs each in flight; one is SIGKILLed at 30 %: its deliveries come back after the ack wait."""
    nats_server = make_nats(sync=False)  # the server is not the one that crashes here
    n, vt = 6000, 3.0
    async with producer(nats_server.url, prefix) as srv:
        ids = await srv.enqueue_many(jobs(n, 0.25))
        victim = workers.start(nats_server.url, prefix, concurrency=500, vt=vt)
        workers.start(nats_server.url, prefix, concurrency=500, vt=vt)
        await workers.wait_for(lambda: len(workers.done()) >= n * 0.3, timeout=120, what="30% of the jobs")

        flying = await in_flight(srv)
        victim.kill()
        victim.wait()
        killed_at = time.time()
        final = await run_dry(srv, workers, ids)

    lines = workers.lines()
    figures = tally(lines, ids)
    redone = [line for line in lines if line.stalls > 0]
    fault_report(
        "nats_worker_sigkill",
        **figures,
        workers=2,
        concurrency=500,
        visibility_timeout=vt,
        in_flight_at_kill=flying,
        redelivered_runs=len(redone),
        recovery_s=round(min(line.at for line in redone) - killed_at, 3) if redone else None,
        drain_s=round(max(line.at for line in lines) - killed_at, 3),
        statuses=dict(final),
    )
    assert figures["lost"] == 0
    assert final == Counter({"successful": n})
    # At most what was in flight: the victim's running handlers, and the finished ones whose
    # outcome it had not yet written and acked (those hold no handler slot).
    assert figures["dup_execs"] <= flying
    assert redone, "the victim's deliveries must come back to the other worker"


async def test_nats_server_restart_mid_run_loses_nothing_acknowledged(make_nats, prefix, workers, fault_report) -> None:
    """nats-server (file store, synced before each acknowledgement) is SIGKILLed and restarted mid-run."""
    server = make_nats(sync=True)
    url = server.url
    n, late, vt = 1000, 200, 3.0
    downtime = 2.0
    async with producer(url, prefix, timeout=2) as srv:
        ids = await srv.enqueue_many(jobs(n, 0.01))
        workers.start(url, prefix, concurrency=50, vt=vt)
        workers.start(url, prefix, concurrency=50, vt=vt)
        await workers.wait_for(lambda: len(workers.done()) >= n * 0.3, timeout=120, what="30% of the jobs")

        acked: list[str] = []
        producer_errors = 0

        async def produce() -> None:
            # One by one, each retried under the same id until NATS confirms it: ids make retries safe.
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
        await asyncio.sleep(downtime)  # the fault itself: the server stays down this long
        await asyncio.to_thread(server.start)
        restarted_at = time.time()
        await asyncio.wait_for(producing, 120)
        everything = ids + acked
        final = await run_dry(srv, workers, everything)
        # nats-server 2.9 keeps some messages acked around its restart in the stream (its ack
        # floor is past them: they are never delivered again); newer servers delete them.
        leftover = await held(srv)

    lines = workers.lines()
    figures = tally(lines, everything)
    after = [line.at for line in lines if line.at > restarted_at]
    fault_report(
        "nats_server_restart",
        **figures,
        downtime_s=downtime,
        producer_errors=producer_errors,
        first_run_after_restart_s=round(min(after) - restarted_at, 3) if after else None,
        acked_left_in_stream=leftover,
        drain_s=round(max(line.at for line in lines) - killed_at, 3),
        statuses=dict(final),
    )
    assert figures["lost"] == 0
    assert final == Counter({"successful": len(everything)})


async def test_a_server_pause_longer_than_the_ack_wait_loses_nothing(make_nats, prefix, workers, fault_report) -> None:
    """SIGSTOP nats-server for longer than the ack wait while jobs are in flight."""
    server = make_nats(sync=False)
    url = server.url
    n, vt = 3000, 3.0
    pause = vt + 1.5
    async with producer(url, prefix) as srv:
        ids = await srv.enqueue_many(jobs(n, 0.05))
        workers.start(url, prefix, concurrency=100, vt=vt)
        workers.start(url, prefix, concurrency=100, vt=vt)
        await workers.wait_for(lambda: len(workers.done()) >= n * 0.3, timeout=120, what="30% of the jobs")
        flying = await in_flight(srv)
        server.pause()
        await asyncio.sleep(pause)  # the fault itself: the server stays stopped this long
        server.resume()
        resumed_at = time.time()
        final = await run_dry(srv, workers, ids)

    lines = workers.lines()
    figures = tally(lines, ids)
    fault_report(
        "nats_server_pause",
        **figures,
        pause_s=pause,
        visibility_timeout=vt,
        in_flight_at_pause=flying,
        redelivered_runs=sum(1 for line in lines if line.stalls > 0),
        drain_s=round(max(line.at for line in lines) - resumed_at, 3),
        statuses=dict(final),
    )
    assert figures["lost"] == 0
    # The server's ack timers run out while it cannot read the renewals waiting in its socket:
    # what was in flight may run again (at-least-once), nothing more.
    assert figures["dup_execs"] <= flying + 200
    assert final == Counter({"successful": n})


async def test_poison_published_to_the_subject_is_parked_for_an_operator(nats_server, prefix, workers, fault_report) -> None:
    """Random bytes published straight to the queue's subject (no id), and a bad message with an id, among good jobs."""
    garbage = os.urandom(64) + b"\xff\x00not a message"
    async with producer(nats_server.url, prefix) as srv:
        broker = srv.broker
        assert isinstance(broker, NatsBroker)
        good = await srv.enqueue_many(jobs(100, 0.0))
        nc = await broker.client.nc()
        subject = broker._queue(QUEUE).work
        await broker.client.send([_request(subject, garbage, None), _request(subject, b"\xc1", {"Nats-Msg-Id": "ghost-job"})])
        more = await srv.enqueue_many(jobs(100, 0.0))
        worker = workers.start(nats_server.url, prefix, concurrency=10)

        raw_id = "raw:" + hashlib.sha1(garbage).hexdigest()
        await workers.wait_for(lambda: workers.done() >= {*good, *more}, timeout=60, what="the good jobs")
        await workers.wait_for(lambda: _failed(srv, {raw_id, "ghost-job"}), timeout=30, what="the poison on the failed list")
        parked = await srv.get_job(raw_id)
        ghost = await srv.get_job("ghost-job")
        after = await srv.enqueue(jobs(1, 0.0)[0])
        await workers.wait_for(lambda: after in workers.done(), timeout=30, what="a job after the poison")
        await workers.wait_for(lambda: _idle(srv), timeout=30, what="an empty queue")
        assert nc.is_connected

    assert parked.status is JobStatus.FAILED and parked.prev_err.startswith("UndecodableMessage")
    assert parked.job.payload == garbage  # kept byte for byte
    assert ghost.status is JobStatus.FAILED and ghost.job.payload == b"\xc1"
    assert worker.poll() is None
    fault_report(
        "nats_poison_message",
        good_done=len(workers.done() & {*good, *more, after}),
        parked_failed=2,
        parked_ids=[raw_id, "ghost-job"],
        worker_alive=worker.poll() is None,
    )


async def test_a_heartbeating_handler_outliving_the_ack_wait_runs_once(nats_server, prefix, workers, fault_report) -> None:
    """Jobs running 3.5 ack waits each, kept by in-progress heartbeats, with a second worker waiting to steal."""
    n, vt, seconds = 10, 1.0, 3.5
    async with producer(nats_server.url, prefix) as srv:
        ids = await srv.enqueue_many(jobs(n, seconds))
        workers.start(nats_server.url, prefix, concurrency=5, vt=vt)
        workers.start(nats_server.url, prefix, concurrency=5, vt=vt)
        await workers.wait_for(lambda: workers.done() >= set(ids), timeout=60, what="the long jobs")
        # A second run of a wrongly redelivered job would hold its delivery until it finished and
        # wrote its ledger line: an empty stream means every run there was is counted.
        await workers.wait_for(lambda: _idle(srv), timeout=30, what="an empty queue")
        final = await statuses(srv, ids)

    lines = workers.lines()
    figures = tally(lines, ids)
    fault_report(
        "nats_long_handler", **figures, visibility_timeout=vt, handler_s=seconds, stalls=sum(line.stalls for line in lines)
    )
    assert figures["lost"] == 0 and figures["dup_execs"] == 0
    assert all(line.stalls == 0 for line in lines)
    assert final == Counter({"successful": n})


async def test_killing_the_stream_leader_of_a_cluster_loses_nothing(nats_cluster, prefix, workers, fault_report) -> None:
    """A 3-node cluster, every stream R3: the queue stream's leader is SIGKILLed mid-run."""
    url = nats_cluster.url
    n, vt = 3000, 3.0
    async with producer(url, prefix, replicas=3, timeout=3) as srv:
        ids = await srv.enqueue_many(jobs(n, 0.01))
        broker = srv.broker
        assert isinstance(broker, NatsBroker)
        stream = broker._queue(QUEUE).stream
        info = await broker.client.api(f"STREAM.INFO.{stream}")
        assert info["config"]["num_replicas"] == 3 and len(info["cluster"]["replicas"]) == 2
        results_info = await srv.results._client.api(f"STREAM.INFO.{prefix}_results")  # type: ignore[attr-defined]
        assert results_info["config"]["num_replicas"] == 3
        workers.start(f"{url}?replicas=3", prefix, concurrency=50, vt=vt)
        workers.start(f"{url}?replicas=3", prefix, concurrency=50, vt=vt)
        await workers.wait_for(lambda: len(workers.done()) >= n * 0.3, timeout=120, what="30% of the jobs")
        leader = info["cluster"]["leader"]
        killed_at = time.time()
        await asyncio.to_thread(nats_cluster.node(leader).kill)
        final = await run_dry(srv, workers, ids)
        new_leader = await eventually(lambda: _leader(broker, stream), timeout=30)
        failed = [m for m in await asyncio.gather(*(srv.get_job(i) for i in ids)) if m.status is JobStatus.FAILED]

    lines = workers.lines()
    figures = tally(lines, ids)
    after = sorted(line.at for line in lines if line.at > killed_at)
    fault_report(
        "nats_cluster_leader_kill",
        **figures,
        killed_leader=leader,
        failed_errors=dict(Counter(m.prev_err.split(":")[0] + f" (stalls {m.stalls})" for m in failed)),
        new_leader=new_leader,
        first_run_after_kill_s=round(after[0] - killed_at, 3) if after else None,
        drain_s=round(after[-1] - killed_at, 3) if after else None,
        statuses=dict(final),
    )
    assert new_leader != leader
    assert figures["lost"] == 0
    assert final == Counter({"successful": n})


def _request(subject: str, data: bytes, headers: dict[str, str] | None):
    from tasqueue_nats._client import Request

    return Request(subject, data, headers)


async def _leader(broker: NatsBroker, stream: str) -> str | None:
    """The stream's leader, or None while the cluster cannot say (a request can time out mid-election)."""
    try:
        return (await broker.client.api(f"STREAM.INFO.{stream}"))["cluster"].get("leader")
    except TasqueueError:
        return None


async def _failed(srv: Server, ids: set[str]) -> bool:
    return ids <= set(await srv.get_failed())
