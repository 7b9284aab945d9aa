"""The typed layer over Redis: handles, typed results awaited through pub/sub, stable schedules."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from tasqueue import FinishWatch, Inspector, Job, JobCtx, JobFailedError, JobOpts, Server, _waiting
from tasqueue.testing import Harness, running
from tasqueue_redis import RedisBroker, RedisResults

pytestmark = pytest.mark.asyncio


class AddArgs(msgspec.Struct, frozen=True):
    a: int
    b: int


def app(url: str, prefix: str) -> Server:
    srv = Server(
        RedisBroker.from_url(url, prefix=prefix, visibility_timeout=5.0),
        RedisResults.from_url(url, prefix=prefix),
        load_entrypoints=False,
    )
    return srv


async def test_a_result_is_awaited_without_polling(redis_server, prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # With status reads this rare, only a notification can bring the result back within the timeout.
    monkeypatch.setattr(_waiting, "RECHECK", 3600.0)
    worker, producer = app(redis_server.url, prefix), app(redis_server.url, prefix)
    go = asyncio.Event()
    pause = _waiting._pause
    paused: list[object] = []

    async def pause_and_count(watch: FinishWatch | None, seconds: float) -> bool:
        assert watch is not None  # a watch, not polling
        if seconds > 1:  # a sleep on the watch, not a quick re-read after a wake-up
            paused.append(watch)
        if len(paused) == 2:
            go.set()  # both waiters have read "not finished" and sleep: now let the jobs finish
        return await pause(watch, seconds)

    monkeypatch.setattr(_waiting, "_pause", pause_and_count)

    @worker.task("add", queue="math")
    async def add(args: AddArgs) -> int:
        await go.wait()
        return args.a + args.b

    @worker.task("fail", queue="math")
    async def fail(args: AddArgs) -> int:
        await go.wait()
        raise ValueError(f"cannot add {args.a} and {args.b}")

    async with worker, producer, running(worker):
        ok = await producer.enqueue(add.job(AddArgs(a=1, b=2)))
        bad = await producer.enqueue(fail.job(AddArgs(a=3, b=4)))
        three, failed = await asyncio.gather(
            producer.result(ok, type=int, timeout=20), producer.result(bad, timeout=20), return_exceptions=True
        )
    assert three == 3
    assert len(paused) == 2  # each waiter slept once (on the watch) and was woken
    assert isinstance(failed, JobFailedError)
    assert (failed.job_id, failed.error_type, failed.error) == (bad, "ValueError", "cannot add 3 and 4")
    assert 'raise ValueError(f"cannot add' in failed.traceback


async def test_waiters_in_another_process_are_woken_by_the_store_of_the_worker(redis_server, prefix: str) -> None:
    # Two stores on one prefix stand for two processes: a notification crosses Redis, not memory.
    store, other = RedisResults.from_url(redis_server.url, prefix=prefix), RedisResults.from_url(redis_server.url, prefix=prefix)
    async with store, other, store.watch(["j1"]) as watch:
        assert watch is not None
        assert await watch.wait(0.05) is False
        await other.set_many([], success=["j2"])
        await other.set_many([], failed=["j1"])
        assert await watch.wait(10.0) is True


async def test_typed_payloads_round_trip_and_refuse_broken_ones(redis_server, prefix: str) -> None:
    srv = app(redis_server.url, prefix)

    @srv.task(queue="math", max_retries=3)
    async def add(args: AddArgs, ctx: JobCtx) -> int:
        return args.a + args.b

    async with srv, running(srv):
        good = await add.enqueue(AddArgs(a=40, b=2))
        broken = await srv.enqueue(Job(add.name, msgspec.msgpack.encode({"a": "x"}), JobOpts(queue="math")))
        assert await add.result(good, timeout=20) == 42
        with pytest.raises(JobFailedError, match="PayloadError") as failed:
            await add.result(broken, timeout=20)
        assert (await srv.get_job(broken)).retried == 0
    assert "Expected `int`, got `str`" in failed.value.error


async def test_declaring_a_schedule_in_three_processes_makes_one_chain(redis_server, prefix: str) -> None:
    servers = [app(redis_server.url, prefix) for _ in range(3)]
    for srv in servers:

        async def report(payload: bytes, ctx: JobCtx) -> None:
            return None

        srv.task("report", queue="cron")(report)
        srv.schedule("nightly", Job("report", b"", JobOpts(queue="cron")), "0 3 * * *")
        job = Job("report", b"again", JobOpts(queue="cron", schedule="*/5 * * * *"))
        await srv.enqueue(job)  # the imperative way, at every start too
    try:
        for srv in servers:
            async with running(srv):
                pass  # each start syncs the declared schedules
        pending = await servers[0].get_pending("cron")
        assert sorted(m.schedule for m in pending) == ["*/5 * * * *", "0 3 * * *"]  # one run of each
        listed = await Inspector(servers[0]).schedules()
        assert sorted(s.cron for s in listed) == ["*/5 * * * *", "0 3 * * *"]
    finally:
        for srv in servers:
            await srv.close()


async def test_an_app_built_on_redis_is_tested_on_memory_without_touching_redis() -> None:
    # The app names a Redis nobody listens on: the harness never uses it, and gives it back.
    srv = Server("redis://127.0.0.1:1/0", "redis://127.0.0.1:1/0", load_entrypoints=True)
    broker, results = srv.broker, srv.results

    @srv.task
    async def add(args: AddArgs) -> int:
        return args.a + args.b

    async with Harness(srv) as tq:
        job_id = await add.enqueue(AddArgs(a=1, b=1))
        await tq.drain()
        assert await add.result(job_id) == 2
    assert (srv.broker, srv.results) == (broker, results)
    assert isinstance(broker, RedisBroker)
    await srv.close()
