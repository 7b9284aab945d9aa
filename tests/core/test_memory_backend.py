"""memory:// beyond the conformance kit: any loop and thread may use it, and its state stays bounded by count."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sized
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from tasqueue import Job, JobCtx, JobOpts, JobStatus, Server, memory
from tasqueue.broker import Envelope
from tasqueue.errors import ConfigurationError
from tasqueue.memory import MemoryBroker, MemoryResults
from tasqueue.results import Write
from tasqueue.testing import running

Q = "q"


def state_size(obj: object, seen: set[int] | None = None) -> int:
    """Entries in every container reachable from ``obj``'s attributes: the backend's bookkeeping."""
    seen = set() if seen is None else seen
    if id(obj) in seen or isinstance(obj, str | bytes):
        return 0
    seen.add(id(obj))
    total = 0
    if isinstance(obj, dict):
        total += len(obj) + sum(state_size(v, seen) for v in obj.values())
    elif isinstance(obj, list | tuple | set) or type(obj).__name__ == "deque":
        assert isinstance(obj, Sized)
        total += len(obj)
    elif type(obj).__module__ == "tasqueue.memory":
        names = [*getattr(type(obj), "__slots__", ()), *getattr(obj, "__dict__", {})]
        total += sum(state_size(getattr(obj, n), seen) for n in names if hasattr(obj, n))
    return total


# ---- one event loop after another, and other threads (issue 8, case 6) ----------------------

module_server = Server("memory://reused-per-loop", load_entrypoints=False, fetch_timeout=0.2)


@module_server.task("noop")
async def noop(payload: bytes, ctx: JobCtx) -> None:
    return None


async def _run_a_delayed_job() -> JobStatus:
    async with running(module_server):
        # Due later than the worker's first fetch: the worker waits idle for it on this loop.
        eta = datetime.now(UTC) + timedelta(seconds=0.5)
        job_id = await module_server.enqueue(Job("noop", b"", JobOpts(eta=eta)))
        return (await module_server.wait(job_id, timeout=10)).status


def test_a_module_level_server_works_on_one_event_loop_after_another(caplog: pytest.LogCaptureFixture) -> None:
    # What pytest-asyncio does with a module-level Server: a new loop per test.
    caplog.set_level(logging.WARNING, logger="tasqueue")
    assert asyncio.run(_run_a_delayed_job()) is JobStatus.SUCCESSFUL
    assert asyncio.run(_run_a_delayed_job()) is JobStatus.SUCCESSFUL
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_a_waiting_fetch_on_one_loop_wakes_for_an_enqueue_from_another_thread() -> None:
    broker = MemoryBroker()
    idle = threading.Event()

    async def consume() -> list[str]:
        assert await broker.fetch(Q, 1, timeout=0.01) == []  # this loop has waited once
        idle.set()
        return [d.id for d in await broker.fetch(Q, 1, timeout=60.0)]

    with ThreadPoolExecutor(1) as pool:
        fetched = pool.submit(asyncio.run, consume())
        assert idle.wait(10)
        asyncio.run(broker.enqueue(Q, [Envelope("m1", b"x")]))  # another thread, another loop
        # Well before the fetch's own timeout: the enqueue woke it.
        assert fetched.result(timeout=10) == ["m1"]


def test_a_job_enqueued_through_sync_from_another_thread_runs_at_once() -> None:
    # A long fetch timeout: a worker that only noticed the job at its next fetch would take 60 s.
    worker = Server("memory://sync-wakes", load_entrypoints=False, fetch_timeout=60)
    producer = Server("memory://sync-wakes", load_entrypoints=False)
    ran = threading.Event()
    stop = threading.Event()

    @worker.task("mark")
    async def mark(payload: bytes, ctx: JobCtx) -> None:
        ran.set()

    async def work() -> None:
        async with running(worker):
            await asyncio.to_thread(stop.wait)

    thread = threading.Thread(target=asyncio.run, args=(work(),))
    thread.start()
    try:
        first = producer.sync.enqueue(Job("mark", b""))
        assert producer.sync.wait(first, timeout=10).status is JobStatus.SUCCESSFUL  # the worker is idle now
        ran.clear()
        second = producer.sync.enqueue(Job("mark", b""))
        assert ran.wait(10), "the idle worker did not wake for a job enqueued from another thread"
        assert producer.sync.wait(second, timeout=10).status is JobStatus.SUCCESSFUL
    finally:
        stop.set()
        thread.join(30)
        producer.sync.close()


@pytest.mark.asyncio
async def test_threads_enqueueing_at_once_lose_nothing() -> None:
    broker = MemoryBroker()

    def publish(thread: int) -> None:
        for n in range(200):
            asyncio.run(broker.enqueue(Q, [Envelope(f"{thread}-{n}", b"")]))

    await asyncio.gather(*(asyncio.to_thread(publish, t) for t in range(4)))
    got = await broker.fetch(Q, 1000, timeout=1)
    assert len({d.id for d in got}) == 800


# ---- bounded by count (issue 8, case 12) ----------------------------------------------------


@pytest.mark.asyncio
async def test_results_keep_at_most_max_keys_and_list_limit_newest_first() -> None:
    store = MemoryResults(max_keys=100, list_limit=50)
    for n in range(1000):  # a job's life: queued, processing, done, each a versioned rewrite
        for version in (1, 2, 3):
            await store.set_many([Write(f"job:{n}", b"%d" % version, version=version)], success=[str(n)] if version == 3 else ())
    await store.set("schedule:s", b"on", persist=True)
    kept = await store.get_many([f"job:{n}" for n in range(1000)])
    # The list keeps the newest 50 ids, and an id that falls off takes its record with it: the
    # records are bounded by list_limit here, before max_keys (100) would.
    assert [n for n, value in enumerate(kept) if value is not None] == list(range(950, 1000))
    assert await store.get_success() == [str(n) for n in range(950, 1000)]
    for n in range(1000, 1200):  # records of jobs not (yet) on a list: bounded by max_keys
        await store.set(f"job:{n}", b"queued", version=1)
    kept = await store.get_many([f"job:{n}" for n in range(1200)])
    assert [n for n, value in enumerate(kept) if value is not None] == list(range(1100, 1200))
    assert await store.get("schedule:s") == b"on"  # persistent keys are neither evicted nor counted
    # Rewriting a key makes it the newest: it outlives keys written after its first write.
    await store.set("job:900", b"again")
    for n in range(1200, 1299):
        await store.set(f"job:{n}", b"x")
    assert await store.get("job:900") == b"again"
    # The bookkeeping beside the data is bounded too (one entry per key, not per write).
    assert state_size(store) <= 3 * (100 + 50 + 1)


@pytest.mark.asyncio
async def test_the_broker_forgets_settled_leases_without_waiting_for_them_to_run_out() -> None:
    broker = MemoryBroker(visibility_timeout=300)
    await broker.enqueue(Q, [Envelope(f"m{n}", b"") for n in range(2000)])
    got = await broker.fetch(Q, 2000, timeout=1)
    for _ in range(3):  # heartbeats
        assert await broker.extend(Q, got) == []
    await broker.ack(Q, got)
    assert await broker.get_pending(Q) == []
    assert state_size(broker) <= 200


def test_the_caps_default_to_the_redis_backends_and_come_from_the_url() -> None:
    store = MemoryResults()
    assert (store.max_keys, store.list_limit) == (memory.DEFAULT_MAX_KEYS, memory.DEFAULT_LIST_LIMIT) == (100_000, 100_000)
    srv = Server("memory://?max_keys=10&list_limit=none&visibility_timeout=3", load_entrypoints=False)
    assert srv.results.max_keys == 10  # type: ignore[attr-defined]
    assert srv.results.list_limit is None  # type: ignore[attr-defined]
    assert srv.broker.visibility_timeout == 3
    with pytest.raises(ConfigurationError, match=r"max_keys='-1'.*whole number"):
        Server(results="memory://?max_keys=-1", load_entrypoints=False)
    with pytest.raises(ConfigurationError, match="max_keys must be >= 1"):
        MemoryResults(max_keys=0)


@pytest.mark.asyncio
async def test_expiry_still_sweeps_what_is_due_and_none_keeps_everything() -> None:
    now = [0.0]
    store = MemoryResults(expiry=10, clock=lambda: now[0])
    await store.set_many([Write("a", b"1")], success=["a"])
    now[0] = 5.0
    await store.set_many([Write("b", b"2")], failed=["b"])
    now[0] = 12.0
    await store.set("c", b"3")
    assert await store.get_many(["a", "b", "c"]) == [None, b"2", b"3"]
    assert (await store.get_success(), await store.get_failed()) == ([], ["b"])
    now[0] = 100.0
    assert (await store.get_success(), await store.get_failed()) == ([], [])
    forever = MemoryResults(expiry=None, clock=lambda: now[0])
    await forever.set_many([Write("k", b"v")], success=["k"])
    now[0] = 1e9
    assert await forever.get("k") == b"v" and await forever.get_success() == ["k"]
