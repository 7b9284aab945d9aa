"""Schedules with a stable identity: started again, declared by many workers, changed, removed, failed."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
import pytest

from tasqueue import BrokerError, Envelope, Inspector, Job, JobCtx, JobOpts, NotFoundError, ResultsError, Server
from tasqueue.memory import MemoryBroker, MemoryResults
from tasqueue.testing import Harness, eventually, running

pytestmark = pytest.mark.asyncio

EVERY_5 = "*/5 * * * *"


class Report(msgspec.Struct):
    title: str


def boot(broker: MemoryBroker, results: MemoryResults, ticks: list[str], *, cron: str | None = EVERY_5) -> Server:
    """One start of an application: a Server with a task and, unless ``cron`` is None, its schedule."""
    srv = Server(broker, results, load_entrypoints=False)

    async def tick(payload: bytes, ctx: JobCtx) -> None:
        ticks.append(payload.decode())

    srv.task("tick", queue="ticks")(tick)
    if cron is not None:
        srv.schedule("report", Job("tick", b"report", JobOpts(queue="ticks")), cron)
    return srv


async def test_the_same_schedule_enqueued_at_every_start_is_one_schedule() -> None:
    broker, results = MemoryBroker(), MemoryResults()
    job = Job("tick", b"", JobOpts(schedule=EVERY_5, queue="ticks"))
    ids = [await Server(broker, results, load_entrypoints=False).enqueue(job) for _ in range(3)]
    assert len(set(ids)) == 1
    assert len(await broker.get_pending("ticks")) == 1  # one chain of runs: one run per tick
    other = await Server(broker, results, load_entrypoints=False).enqueue(
        Job("tick", b"other", JobOpts(schedule=EVERY_5, queue="ticks"))
    )
    assert other != ids[0]


async def test_three_starts_of_an_app_run_a_schedule_once_per_tick() -> None:
    ticks: list[str] = []
    srv = boot(MemoryBroker(), MemoryResults(), ticks)
    async with Harness(srv) as tq:
        # Two more processes of the same app start beside it, on the same backends.
        others = [boot(tq.broker, tq.results, ticks) for _ in range(2)]
        for other in others:
            other.clock = tq.clock
        await tq.start()
        async with running(others[0]), running(others[1]):
            await tq.drain()
            for n in range(1, 4):
                tq.clock.advance(300)
                await tq.drain()
                assert ticks == ["report"] * n
            (listed,) = await Inspector(srv).schedules()
            assert (listed.cron, listed.task, listed.queue) == (EVERY_5, "tick", "ticks")


async def test_a_changed_schedule_replaces_the_old_one_and_a_removed_one_stops() -> None:
    ticks: list[str] = []
    srv = boot(MemoryBroker(), MemoryResults(), ticks)
    async with Harness(srv) as tq:
        await tq.drain()
        (before,) = await Inspector(srv).schedules()
        # A deploy: the new code runs the schedule hourly instead.
        deployed = boot(tq.broker, tq.results, ticks, cron="0 * * * *")
        deployed.clock = tq.clock
        async with running(deployed):
            (after,) = await Inspector(srv).schedules()
            assert after.cron == "0 * * * *"
            assert after.id != before.id
            with pytest.raises(NotFoundError):
                await srv.cancel_schedule(before.id)  # already stopped
            tq.clock.advance(3600)
            await tq.drain()
            assert ticks == ["report"]  # the hourly tick; the old five-minute run was dropped
        # Another deploy declares no schedule for the task any more.
        removed = boot(tq.broker, tq.results, ticks, cron=None)
        removed.clock = tq.clock
        async with running(removed):
            assert await Inspector(srv).schedules() == []
            tq.clock.advance(3600)
            await tq.drain()
            assert ticks == ["report"]


class _Down(MemoryBroker):
    async def enqueue(self, queue: str, envelopes: Sequence[Envelope]) -> None:
        msg = "connection refused"
        raise OSError(msg)


async def test_a_failed_publish_of_a_recurring_job_leaves_no_marker_behind() -> None:
    results = MemoryResults()
    job = Job("tick", b"", JobOpts(schedule=EVERY_5, queue="ticks"))
    with pytest.raises(BrokerError, match="connection refused"):
        await Server(_Down(), results, load_entrypoints=False).enqueue(job)
    assert results._data == {}  # neither the run's record nor the schedule's marker
    # So starting it again once the broker is back really starts it.
    broker = MemoryBroker()
    schedule_id = await Server(broker, results, load_entrypoints=False).enqueue(job)
    assert len(await broker.get_pending("ticks")) == 1
    await Server(broker, results, load_entrypoints=False).cancel_schedule(schedule_id)


async def test_a_schedule_on_a_typed_task_runs_with_its_default_payload() -> None:
    srv = Server(load_entrypoints=False)
    seen: list[int] = []

    @srv.task(schedule="0 0 * * *")
    async def nightly(limit: int = 10) -> None:
        seen.append(limit)

    with pytest.raises(TypeError, match="has no default"):

        @srv.task(schedule="0 0 * * *")
        async def needs(report: Report) -> None: ...

    with pytest.raises(ValueError, match="invalid cron schedule"):
        srv.schedule("bad", nightly.job(1), "every day")

    assert srv.get_tasks() == [nightly.name]  # the refused one was not registered
    async with Harness(srv) as tq:
        await tq.drain()  # the worker starts, and with it the schedule
        tq.clock.advance(86400)
        await tq.drain()
        assert seen == [10]


class _FlakyResults(MemoryResults):
    """A store that refuses everything until told it is back."""

    down = True

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if self.down:
            msg = "results store unreachable"
            raise ResultsError(msg)
        return await super().get_many(keys)


async def test_a_worker_starts_while_the_store_is_down_and_syncs_its_schedules_once_it_is_back() -> None:
    results = _FlakyResults()
    broker = MemoryBroker()
    srv = boot(broker, results, [])
    async with running(srv):
        assert await broker.get_pending("ticks") == []
        results.down = False
        pending = await eventually(lambda: srv.get_pending("ticks"), timeout=10)
        assert [m.schedule for m in pending] == [EVERY_5]
