"""Metrics: every run counted once, in-flight jobs, run and queue-wait durations."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from tasqueue import Backoff, Job, JobCtx, JobOpts, Server
from tasqueue.testing import running

FAST_RETRY = Backoff(initial=0.01, jitter=False)


@pytest.mark.asyncio
async def test_each_run_is_counted_once(server: Server, otel) -> None:
    # `server` has an explicit OtelPlugin *and* the installed entry point: counts must not double.
    @server.task("ok", queue="q")
    async def ok(payload: bytes, ctx: JobCtx) -> None:
        return None

    @server.task("bad", queue="q")
    async def bad(payload: bytes, ctx: JobCtx) -> None:
        raise KeyError(payload)

    async with running(server):
        good = [await server.enqueue(Job("ok", b"", JobOpts(queue="q"))) for _ in range(5)]
        failing = [await server.enqueue(Job("bad", b"", JobOpts(queue="q", max_retries=1, backoff=FAST_RETRY))) for _ in range(2)]
        for job_id in good + failing:
            await server.wait(job_id, timeout=10)

    assert otel.total("tasqueue.jobs.enqueued", queue="q", task="ok") == 5
    assert otel.total("tasqueue.jobs.enqueued", queue="q", task="bad") == 2
    assert otel.total("tasqueue.jobs.succeeded", queue="q", task="ok") == 5
    assert otel.total("tasqueue.jobs.succeeded", task="bad") == 0
    assert otel.total("tasqueue.jobs.retried", queue="q", task="bad", error="KeyError") == 2
    assert otel.total("tasqueue.jobs.failed", queue="q", task="bad", error="KeyError") == 2
    assert otel.total("tasqueue.jobs.failed", task="ok") == 0
    # One duration per run (5 + 2 x 2 attempts), tagged with the outcome; one wait per job.
    assert otel.total("tasqueue.job.duration") == 9
    assert otel.total("tasqueue.job.duration", outcome="success") == 5
    assert otel.total("tasqueue.job.duration", outcome="retry") == 2
    assert otel.total("tasqueue.job.duration", outcome="failure") == 2
    assert otel.total("tasqueue.job.wait.duration", queue="q") == 7
    assert otel.total("tasqueue.jobs.active") == 0
    assert len(otel.runs()) == 9
    assert len(otel.sends()) == 7


@pytest.mark.asyncio
async def test_jobs_running_are_counted_as_active(server: Server, otel) -> None:
    seen: list[float] = []
    release = asyncio.Event()
    started = asyncio.Event()

    @server.task("hold", concurrency=4)
    async def hold(payload: bytes, ctx: JobCtx) -> None:
        started.set()
        await release.wait()

    @server.task("look", queue="other")
    async def look(payload: bytes, ctx: JobCtx) -> None:
        seen.append(otel.total("tasqueue.jobs.active", task="hold"))

    async with running(server):
        held = await server.enqueue(Job("hold", b""))
        await started.wait()
        looked = await server.enqueue(Job("look", b"", JobOpts(queue="other")))
        await server.wait(looked, timeout=10)
        release.set()
        await server.wait(held, timeout=10)

    assert seen == [1]
    assert otel.total("tasqueue.jobs.active", task="hold") == 0


@pytest.mark.asyncio
async def test_queue_wait_counts_from_enqueue_or_eta_to_the_start_of_the_run(server: Server, otel) -> None:
    @server.task("t")
    async def t(payload: bytes, ctx: JobCtx) -> None:
        return None

    eta = datetime.now(UTC) + timedelta(milliseconds=200)
    async with running(server):
        now_id = await server.enqueue(Job("t", b"now", JobOpts(queue="tasqueue:tasks")))
        now_job = await server.wait(now_id, timeout=10)
        later_id = await server.enqueue(Job("t", b"later", JobOpts(eta=eta)))
        later_job = await server.wait(later_id, timeout=10)

    [point] = otel.points("tasqueue.job.wait.duration")
    assert point.count == 2
    assert now_job.processed_at is not None
    assert now_job.enqueued_at is not None
    assert later_job.processed_at is not None
    expected = (now_job.processed_at - now_job.enqueued_at).total_seconds() + (later_job.processed_at - eta).total_seconds()
    # The delayed job's wait starts at its eta, not at its enqueue 200 ms earlier.
    assert point.sum == pytest.approx(expected, abs=1e-6)


@pytest.mark.asyncio
async def test_instruments_have_seconds_and_job_units(server: Server, otel) -> None:
    @server.task("t")
    async def t(payload: bytes, ctx: JobCtx) -> None:
        return None

    async with running(server):
        await server.wait(await server.enqueue(Job("t", b"")), timeout=10)

    data = otel.reader.get_metrics_data()
    [scope] = [sm for rm in data.resource_metrics for sm in rm.scope_metrics if sm.scope.name == "tasqueue"]
    units = {m.name: m.unit for m in scope.metrics}
    assert units == {
        "tasqueue.jobs.enqueued": "{job}",
        "tasqueue.jobs.succeeded": "{job}",
        "tasqueue.jobs.active": "{job}",
        "tasqueue.job.duration": "s",
        "tasqueue.job.wait.duration": "s",
    }
    [duration] = otel.points("tasqueue.job.duration")
    assert list(duration.explicit_bounds)[:3] == [0.005, 0.01, 0.025]
    assert duration.explicit_bounds[-1] == 3600.0
