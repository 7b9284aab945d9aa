"""The typed layer over NATS: typed results awaited through subscriptions, broken payloads, schedules."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from tasqueue import FinishWatch, Job, JobCtx, JobFailedError, JobOpts, Server, _waiting
from tasqueue.testing import running
from tasqueue_nats import NatsBroker, NatsResults

pytestmark = pytest.mark.asyncio


class AddArgs(msgspec.Struct, frozen=True):
    a: int
    b: int


def app(url: str, prefix: str) -> Server:
    return Server(NatsBroker(url, prefix=prefix, visibility_timeout=5.0), NatsResults(url, prefix=prefix), load_entrypoints=False)


async def test_a_result_is_awaited_without_polling(nats_server, prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # With status reads this rare, only a notification can bring the result back within the timeout.
    monkeypatch.setattr(_waiting, "RECHECK", 3600.0)
    worker, producer = app(nats_server.url, prefix), app(nats_server.url, prefix)
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
            producer.result(ok, type=int, timeout=30), producer.result(bad, timeout=30), return_exceptions=True
        )
    assert three == 3
    assert len(paused) == 2  # each waiter slept once (on the watch) and was woken
    assert isinstance(failed, JobFailedError)
    assert (failed.job_id, failed.error_type, failed.error) == (bad, "ValueError", "cannot add 3 and 4")


async def test_broken_payloads_fail_at_once_and_schedules_are_started_once(nats_server, prefix: str) -> None:
    srv = app(nats_server.url, prefix)

    @srv.task(queue="math", max_retries=3)
    async def add(args: AddArgs, ctx: JobCtx) -> int:
        return args.a + args.b

    job = Job(add.name, b"", JobOpts(queue="math", schedule="*/5 * * * *"))
    async with srv, running(srv):
        assert len({await srv.enqueue(job) for _ in range(3)}) == 1
        good = await add.enqueue(AddArgs(a=40, b=2))
        broken = await srv.enqueue(Job(add.name, msgspec.msgpack.encode({"a": "x"}), JobOpts(queue="math")))
        assert await add.result(good, timeout=30) == 42
        with pytest.raises(JobFailedError, match="PayloadError"):
            await add.result(broken, timeout=30)
        assert (await srv.get_job(broken)).retried == 0
        assert [m.schedule for m in await srv.get_pending("math")] == ["*/5 * * * *"]  # one chain of runs
