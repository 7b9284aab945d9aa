"""The testing plugin: an application's worker in the test, ``drain()``, and a clock moved by hand."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import msgspec
import pytest

from tasqueue import Backoff, Job, JobCtx, JobFailedError, JobOpts, JobStatus, Server
from tasqueue.memory import MemoryBroker
from tasqueue.testing import Harness, eventually

pytestmark = pytest.mark.asyncio

app = Server(load_entrypoints=False)
ran: list[str] = []


@app.task(queue="app")
async def remember(word: str) -> str:
    ran.append(word)
    return word.upper()


@pytest.fixture
def tasqueue_server() -> Server:
    # What an application's conftest does: hand its own Server to the plugin.
    ran.clear()
    return app


async def test_the_fixture_runs_the_applications_own_server_on_memory(tq: Harness) -> None:
    assert tq.server is app
    assert isinstance(app.broker, MemoryBroker)
    job_id = await remember.enqueue("hi")
    assert ran == []  # nothing runs until the test says so
    await tq.drain()
    assert ran == ["hi"]
    assert await remember.result(job_id) == "HI"


async def test_the_server_gets_its_own_backends_back_afterwards() -> None:
    before = (app.broker, app.results, app.clock)
    async with Harness(app) as tq:
        await remember.enqueue("x")
        await tq.drain()
        assert (app.broker, app.results) == (tq.broker, tq.results)
    assert (app.broker, app.results, app.clock) == before
    assert asyncio.get_running_loop().time() == pytest.approx(time.monotonic(), abs=1.0)


async def test_an_eta_is_reached_by_moving_the_clock(tq: Harness) -> None:
    job_id = await remember.enqueue("later", eta=tq.clock.now() + timedelta(hours=2))
    await tq.drain()
    assert ran == []
    tq.clock.advance(timedelta(hours=1))
    await tq.drain()
    assert ran == []
    tq.clock.advance(timedelta(hours=1, seconds=1))
    await tq.drain()
    assert ran == ["later"]
    assert (await tq.server.get_job(job_id)).status is JobStatus.SUCCESSFUL


async def test_retry_delays_pass_without_waiting() -> None:
    srv = Server(load_entrypoints=False, backoff=Backoff(initial=600, jitter=False))
    tries: list[float] = []

    @srv.task(max_retries=2)
    async def flaky(n: int, ctx: JobCtx) -> int:
        tries.append(asyncio.get_running_loop().time())
        if len(tries) < 3:
            raise RuntimeError("not yet")
        return n

    async with Harness(srv) as tq:
        started = time.monotonic()
        job_id = await flaky.enqueue(7)
        await tq.drain()
        assert len(tries) == 1
        assert (await srv.get_job(job_id)).status is JobStatus.RETRYING
        tq.clock.advance(600)
        await tq.drain()
        tq.clock.advance(1200)  # the backoff doubles
        await tq.drain()
        assert await flaky.result(job_id) == 7
        assert tries[2] - tries[0] >= 1800  # as the worker saw it
        assert time.monotonic() - started < 10  # and not in real time


async def test_a_job_timeout_fires_when_the_clock_passes_it() -> None:
    srv = Server(load_entrypoints=False)
    started = asyncio.Event()

    @srv.task(timeout=60)
    async def slow(n: int) -> int:
        started.set()
        await asyncio.sleep(3600)
        return n

    async with Harness(srv) as tq:
        job_id = await slow.enqueue(1)
        await tq.start()
        await asyncio.wait_for(started.wait(), 10)
        tq.clock.advance(61)
        await tq.drain()
        with pytest.raises(JobFailedError) as failed:
            await slow.result(job_id)
        assert failed.value.error_type == "JobTimeoutError"
        assert "longer than its timeout of 60s" in failed.value.error


async def test_cron_ticks_come_when_the_clock_reaches_them() -> None:
    srv = Server(load_entrypoints=False)
    ticks: list[str] = []

    @srv.task(schedule="*/5 * * * *")
    async def tick(payload: bytes, ctx: JobCtx) -> None:
        ticks.append(ctx.meta.id)

    async with Harness(srv) as tq:
        await tq.drain()
        assert ticks == []
        for n in range(1, 4):
            tq.clock.advance(300)
            await tq.drain()
            assert len(ticks) == n
        assert len(set(ticks)) == 3


async def test_follow_ups_run_in_the_same_drain(tq: Harness) -> None:
    await tq.server.enqueue(
        Job(remember.name, msgspec.msgpack.encode("a"), JobOpts(queue="app"), on_success=(remember.job("b"),))
    )
    await tq.drain()
    assert ran == ["a", "b"]


async def test_drain_says_what_is_still_busy_when_it_gives_up() -> None:
    srv = Server(load_entrypoints=False)

    @srv.task(queue="stuck")
    async def forever(n: int) -> None:
        await asyncio.Event().wait()

    async with Harness(srv) as tq:
        await forever.enqueue(1)
        with pytest.raises(TimeoutError, match=r"still busy after 0.2s \(due or running jobs per queue: \{'stuck': 1\}\)"):
            await tq.drain(timeout=0.2)


async def test_eventually_still_works_under_a_moved_clock(tq: Harness) -> None:
    tq.clock.advance(10_000)
    job_id = await remember.enqueue("x")
    await tq.start()
    msg = await eventually(lambda: tq.server.get_job(job_id), timeout=5)
    assert msg.id == job_id
    with pytest.raises(ValueError, match="only moves forward"):
        tq.clock.advance(-1)
