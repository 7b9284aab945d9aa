"""``ServerSuite``: the job semantics of DESIGN.md, end to end through a Server on the backend."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import msgspec
import pytest

from tasqueue._codec import decode_job, encode
from tasqueue._keys import job_key
from tasqueue.broker import Broker, Envelope
from tasqueue.errors import NotFoundError
from tasqueue.jobs import Backoff, Chain, Group, Job, JobOpts
from tasqueue.messages import ChainMessage, GroupMessage, JobStatus
from tasqueue.results import Results, Write
from tasqueue.server import Server
from tasqueue.tasks import JobCtx, TaskOpts
from tasqueue.testing._common import BrokerFixture, ResultsFixtures, eventually, running
from tasqueue.testing._edges import ServerEdges

FAST = Backoff(initial=0.01, max=0.05)


@pytest.mark.asyncio
class ServerSuite(BrokerFixture, ResultsFixtures, ServerEdges):
    """Subclass and override the ``broker`` and ``results_factory`` fixtures (see ``tasqueue.testing``)."""

    @pytest.fixture
    def server(self, broker: Broker, results: Results) -> Server:
        # Not closed here: the backend fixtures own the connections.
        return Server(
            broker, results, load_entrypoints=False, backoff=FAST, shutdown_timeout=0.5, max_stalls=2, unknown_task_timeout=0.5
        )

    async def test_a_job_runs_and_saves_its_result(self, server: Server) -> None:
        seen: list[tuple[bytes, str]] = []

        @server.task("add", concurrency=4)
        async def add(payload: bytes, ctx: JobCtx) -> bytes:
            seen.append((payload, ctx.meta.status))
            a, b = map(int, payload.split())
            return str(a + b).encode()

        job_id = await server.enqueue(Job("add", b"2 3"))
        assert (await server.get_job(job_id)).status is JobStatus.QUEUED
        async with running(server):
            done = await server.wait(job_id, timeout=10)
        assert done.status is JobStatus.SUCCESSFUL
        assert done.processed_at is not None and done.enqueued_at is not None
        assert await server.get_result(job_id) == b"5"
        assert seen == [(b"2 3", JobStatus.PROCESSING)]
        assert job_id in await server.get_success()
        assert await server.get_pending() == []

    async def test_sync_handlers_run_in_threads(self, server: Server) -> None:
        import threading

        threads: list[str] = []

        @server.task("sync")
        def handler(payload: bytes, ctx: JobCtx) -> bytes:
            threads.append(threading.current_thread().name)
            ctx.save_sync(b"saved:" + payload)
            return None  # type: ignore[return-value]

        job_id = await server.enqueue(Job("sync", b"x"))
        async with running(server):
            assert (await server.wait(job_id, timeout=10)).status is JobStatus.SUCCESSFUL
        assert threads and threads[0] != threading.main_thread().name
        assert await server.get_result(job_id) == b"saved:x"

    async def test_failures_are_retried_then_fail_with_the_last_error(self, server: Server) -> None:
        runs: list[int] = []
        events: list[str] = []

        async def on_retry(ctx: JobCtx, exc: BaseException) -> None:
            events.append(f"retrying:{exc}")

        def on_failed(ctx: JobCtx, exc: BaseException) -> None:
            events.append(f"failed:{exc}")

        @server.task("flaky", retrying_cb=on_retry, failed_cb=on_failed)
        async def flaky(payload: bytes, ctx: JobCtx) -> None:
            runs.append(ctx.meta.retried)
            raise RuntimeError(f"attempt {ctx.meta.retried}")

        job_id = await server.enqueue(Job("flaky", b"", JobOpts(max_retries=2)))
        async with running(server):
            done = await server.wait(job_id, timeout=10)
        assert runs == [0, 1, 2]
        assert done.status is JobStatus.FAILED
        assert (done.retried, done.max_retry) == (2, 2)
        assert done.prev_err == "RuntimeError: attempt 2"
        assert events == ["retrying:attempt 0", "retrying:attempt 1", "failed:attempt 2"]
        assert job_id in await server.get_failed()
        with pytest.raises(NotFoundError):
            await server.get_result(job_id)

    async def test_a_retry_that_succeeds_is_successful(self, server: Server) -> None:
        @server.task("second-time-lucky")
        async def lucky(payload: bytes, ctx: JobCtx) -> bytes:
            if ctx.meta.retried == 0:
                raise ValueError("not yet")
            assert ctx.meta.prev_err == "ValueError: not yet"
            return b"ok"

        job_id = await server.enqueue(Job("second-time-lucky", b"", JobOpts(max_retries=3)))
        async with running(server):
            done = await server.wait(job_id, timeout=10)
        assert (done.status, done.retried, done.prev_err) == (JobStatus.SUCCESSFUL, 1, "")
        assert await server.get_result(job_id) == b"ok"

    async def test_a_timeout_cancels_the_handler_and_fails_the_run(self, server: Server) -> None:
        cancelled = asyncio.Event()

        @server.task("slow")
        async def slow(payload: bytes, ctx: JobCtx) -> None:
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                cancelled.set()
                raise

        job_id = await server.enqueue(Job("slow", b"", JobOpts(timeout=0.2)))
        async with running(server):
            done = await server.wait(job_id, timeout=10)
        assert done.status is JobStatus.FAILED
        assert done.prev_err.startswith("JobTimeoutError")
        assert cancelled.is_set()

    async def test_eta_delays_the_run(self, server: Server) -> None:
        self.capabilities.require("delayed")
        started: list[datetime] = []

        @server.task("later")
        async def later(payload: bytes, ctx: JobCtx) -> None:
            started.append(datetime.now(UTC))

        eta = datetime.now(UTC) + timedelta(seconds=1)
        job_id = await server.enqueue(Job("later", b"", JobOpts(eta=eta)))
        assert [m.id for m in await server.get_pending()] == [job_id]
        async with running(server):
            await server.wait(job_id, timeout=10)
        assert started[0] >= eta - timedelta(milliseconds=50)  # clocks of broker and test may differ slightly

    async def test_on_success_jobs_see_the_result(self, server: Server) -> None:
        seen: list[bytes | None] = []

        @server.task("first")
        async def first(payload: bytes, ctx: JobCtx) -> None:
            await ctx.save(b"from-first")

        @server.task("second")
        async def second(payload: bytes, ctx: JobCtx) -> bytes:
            seen.append(ctx.meta.prev_job_result)
            return b"from-second"

        job_id = await server.enqueue(Job("first", b"", on_success=(Job("second", b""),)))
        async with running(server):
            parent = await server.wait(job_id, timeout=10)
            (child_id,) = parent.on_success_ids
            child = await server.wait(child_id, timeout=10)
        assert child.status is JobStatus.SUCCESSFUL
        assert seen == [b"from-first"]
        assert await server.get_result(child_id) == b"from-second"

    async def test_on_error_jobs_run_after_a_final_failure(self, server: Server) -> None:
        ran = asyncio.Event()

        @server.task("fails")
        async def fails(payload: bytes, ctx: JobCtx) -> None:
            raise RuntimeError("x")

        @server.task("cleanup")
        async def cleanup(payload: bytes, ctx: JobCtx) -> None:
            ran.set()

        job_id = await server.enqueue(Job("fails", b"", on_error=(Job("cleanup", b""),), on_success=(Job("cleanup", b""),)))
        async with running(server):
            done = await server.wait(job_id, timeout=10)
            async with asyncio.timeout(10):
                await ran.wait()
        assert done.status is JobStatus.FAILED and done.on_success_ids == []

    async def test_group_succeeds_when_all_succeed(self, server: Server) -> None:
        @server.task("ok")
        async def ok(payload: bytes, ctx: JobCtx) -> bytes:
            return payload

        group_id = await server.enqueue_group(Group([Job("ok", b"1"), Job("ok", b"2"), Job("ok", b"3")]))
        group = await server.get_group(group_id)
        assert group.status is JobStatus.PROCESSING and len(group.job_status) == 3
        async with running(server):
            final = await eventually(lambda: _done(server.get_group(group_id)))
        assert final.status is JobStatus.SUCCESSFUL
        assert set(final.job_status.values()) == {JobStatus.SUCCESSFUL}

    async def test_group_fails_when_one_fails(self, server: Server) -> None:
        @server.task("maybe")
        async def maybe(payload: bytes, ctx: JobCtx) -> None:
            if payload == b"bad":
                raise RuntimeError("bad")

        group_id = await server.enqueue_group(Group([Job("maybe", b"good"), Job("maybe", b"bad")]))
        async with running(server):
            final = await eventually(lambda: _done(server.get_group(group_id)))
        assert final.status is JobStatus.FAILED

    async def test_chain_passes_each_result_on_and_succeeds_with_the_last(self, server: Server) -> None:
        @server.task("double")
        async def double(payload: bytes, ctx: JobCtx) -> bytes:
            n = int(ctx.meta.prev_job_result or payload)
            return str(n * 2).encode()

        chain_id = await server.enqueue_chain(Chain([Job("double", b"1"), Job("double", b""), Job("double", b"")]))
        async with running(server):
            final = await eventually(lambda: _done(server.get_chain(chain_id)))
        assert final.status is JobStatus.SUCCESSFUL
        assert len(final.prev_jobs) == 3 and final.job_id == final.prev_jobs[-1]
        assert await server.get_result(final.job_id) == b"8"

    async def test_chain_fails_with_its_first_failing_job(self, server: Server) -> None:
        ran: list[bytes] = []

        @server.task("step")
        async def step(payload: bytes, ctx: JobCtx) -> None:
            ran.append(payload)
            if payload == b"2":
                raise RuntimeError("step 2 broke")

        chain_id = await server.enqueue_chain(Chain([Job("step", b"1"), Job("step", b"2"), Job("step", b"3")]))
        async with running(server):
            final = await eventually(lambda: _done(server.get_chain(chain_id)))
        assert final.status is JobStatus.FAILED
        assert ran == [b"1", b"2"]
        assert len(final.prev_jobs) == 1

    async def test_an_unknown_task_fails_and_the_worker_goes_on(self, server: Server) -> None:
        @server.task("known")
        async def known(payload: bytes, ctx: JobCtx) -> None:
            return None

        unknown = await server.enqueue(Job("nobody-handles-this", b""))
        good = await server.enqueue(Job("known", b""))
        async with running(server):
            bad = await server.wait(unknown, timeout=10)
            assert (await server.wait(good, timeout=10)).status is JobStatus.SUCCESSFUL
        assert bad.status is JobStatus.FAILED
        assert bad.prev_err.startswith("UnknownTaskError") and "'nobody-handles-this'" in bad.prev_err
        assert unknown in await server.get_failed()

    async def test_undecodable_bytes_become_a_failed_job_and_the_worker_goes_on(self, server: Server, broker: Broker) -> None:
        @server.task("known")
        async def known(payload: bytes, ctx: JobCtx) -> None:
            return None

        await broker.enqueue("tasqueue:tasks", [Envelope("garbage-1", b"\xc1\xff not msgpack")])
        good = await server.enqueue(Job("known", b""))
        async with running(server):
            assert (await server.wait(good, timeout=10)).status is JobStatus.SUCCESSFUL
            await eventually(lambda: _recorded(server, "garbage-1"))  # published bare: no record until a worker writes one
            parked = await server.wait("garbage-1", timeout=10)
        assert parked.status is JobStatus.FAILED
        assert parked.prev_err.startswith("UndecodableMessage")
        assert parked.job.payload == b"\xc1\xff not msgpack"  # kept for an operator
        assert "garbage-1" in await server.get_failed()

    async def test_a_job_whose_worker_died_runs_again(self, server: Server, broker: Broker) -> None:
        self.capabilities.require("lease_expiry")
        runs: list[int] = []

        @server.task("work")
        async def work(payload: bytes, ctx: JobCtx) -> bytes:
            runs.append(ctx.meta.stalls)
            return b"done"

        job_id = await server.enqueue(Job("work", b""))
        # A worker that fetched the job and died: its lease is never renewed or settled.
        (taken,) = await broker.fetch("tasqueue:tasks", 1, timeout=5)
        assert taken.id == job_id
        async with running(server):
            done = await server.wait(job_id, timeout=broker.visibility_timeout * 10 + 10)
        assert done.status is JobStatus.SUCCESSFUL and done.retried == 0
        assert runs == [1]

    async def test_a_job_that_keeps_killing_its_workers_is_parked(self, server: Server, broker: Broker) -> None:
        self.capabilities.require("lease_expiry")

        @server.task("poison")
        async def poison(payload: bytes, ctx: JobCtx) -> None:
            raise AssertionError("must never run: its workers died too often")

        job_id = await server.enqueue(Job("poison", b""))
        # Each fetch that is never settled is one death. The first two are nobody's in particular
        # (the job may have died beside the culprit); after them it runs alone, and deaths count.
        for _ in range(server.max_stalls + 3):
            (taken,) = await broker.fetch("tasqueue:tasks", 1, timeout=broker.visibility_timeout * 10 + 5)
            assert taken.id == job_id
        async with running(server):
            done = await server.wait(job_id, timeout=broker.visibility_timeout * 10 + 10)
        assert done.status is JobStatus.FAILED
        assert done.prev_err.startswith("WorkerLostError")
        assert done.retried == 0

    async def test_jobs_that_died_beside_a_crashing_one_are_not_parked(self, server: Server, broker: Broker) -> None:
        # A worker that dies kills every job it runs; only deaths while a job ran alone count.
        self.capabilities.require("lease_expiry")
        server.max_stalls = 0
        beside: list[int] = []
        running_now = 0

        @server.task("work", concurrency=4)
        async def work(payload: bytes, ctx: JobCtx) -> None:
            nonlocal running_now
            running_now += 1
            beside.append(running_now)
            await asyncio.sleep(0.05)  # the work itself: long enough to overlap another run
            running_now -= 1

        ids = await server.enqueue_many([Job("work", b"%d" % n) for n in range(4)])
        wait = broker.visibility_timeout * 10 + 5
        for _ in range(2):  # two deaths of a worker that held all four
            taken = await broker.fetch("tasqueue:tasks", 4, timeout=wait)
            while len(taken) < 4:
                taken += await broker.fetch("tasqueue:tasks", 4 - len(taken), timeout=wait)
            assert sorted(d.id for d in taken) == sorted(ids)
        async with running(server):
            done = [await server.wait(job_id, timeout=wait) for job_id in ids]
        assert [m.status for m in done] == [JobStatus.SUCCESSFUL] * 4  # none parked, though max_stalls=0
        assert beside == [1, 1, 1, 1]  # each ran alone, so that a death now would be its own
        assert all(m.stalls == 2 for m in done)

    async def test_a_worker_that_lost_its_lease_commits_nothing_of_its_outcome(self, server: Server, results: Results) -> None:
        # Another delivery of the same attempt finished the job first (here: failed it); the run
        # that finishes second must not list it nor publish its follow-ups.
        from tasqueue._keys import PHASE_DONE, job_key, status_version

        @server.task("t")
        async def t(payload: bytes, ctx: JobCtx) -> None:
            other = msgspec_replace(ctx.meta, status=JobStatus.FAILED, prev_err="RuntimeError: other")
            version = status_version(0, 0, 2, PHASE_DONE)
            await results.set_many([Write(job_key(ctx.meta.id), encode(other), version=version, failed=ctx.meta.id)])

        @server.task("child")
        async def child(payload: bytes, ctx: JobCtx) -> None:
            raise AssertionError("a follow-up of the losing run must not be published")

        job_id = await server.enqueue(Job("t", b"", on_success=(Job("child", b""),)))
        async with running(server):
            await server.wait(job_id, timeout=10)
            marker = await server.enqueue(Job("t", b""))
            await server.wait(marker, timeout=10)
        assert (await server.get_job(job_id)).status is JobStatus.FAILED
        assert await server.get_success() == []
        assert sorted(await server.get_failed()) == sorted([job_id, marker])
        assert await server.get_pending() == []

    async def test_a_long_job_keeps_its_lease_and_runs_once(self, server: Server) -> None:
        self.capabilities.require("lease_expiry")
        runs: list[str] = []
        vt = server.broker.visibility_timeout

        @server.task("long")
        async def long(payload: bytes, ctx: JobCtx) -> None:
            runs.append(ctx.meta.id)
            await asyncio.sleep(vt * 2.5)  # the work itself: longer than one lease

        job_id = await server.enqueue(Job("long", b""))
        async with running(server):
            done = await server.wait(job_id, timeout=vt * 10 + 10)
        assert done.status is JobStatus.SUCCESSFUL
        assert runs == [job_id]
        assert done.stalls == 0

    async def test_shutdown_hands_unfinished_jobs_back_without_a_retry(self, server: Server, broker: Broker) -> None:
        started = asyncio.Event()
        finish = asyncio.Event()
        runs: list[tuple[int, int]] = []

        @server.task("stubborn")
        async def stubborn(payload: bytes, ctx: JobCtx) -> bytes:
            runs.append((ctx.meta.retried, ctx.meta.released))
            started.set()
            await finish.wait()
            return b"finished"

        job_id = await server.enqueue(Job("stubborn", b"", JobOpts(max_retries=0), on_success=(Job("stubborn", b""),)))
        async with running(server):
            async with asyncio.timeout(10):
                await started.wait()
        # stopped after the 0.5 s grace period with the handler still waiting
        cut_short = await server.get_job(job_id)
        assert cut_short.status is JobStatus.QUEUED
        assert cut_short.on_success_ids == [] and job_id not in await server.get_success()
        assert [decode_job(p).id for p in await broker.get_pending("tasqueue:tasks")] == [job_id]

        finish.set()
        async with running(server):
            done = await server.wait(job_id, timeout=10)
        assert done.status is JobStatus.SUCCESSFUL
        assert runs[0] == (0, 0) and runs[1] == (0, 1)  # released once, never counted as a retry

    async def test_a_late_write_from_a_stale_worker_never_undoes_a_finished_job(self, server: Server, results: Results) -> None:
        @server.task("quick")
        async def quick(payload: bytes, ctx: JobCtx) -> None:
            return None

        job_id = await server.enqueue(Job("quick", b""))
        async with running(server):
            done = await server.wait(job_id, timeout=10)
        from tasqueue._keys import PHASE_RUNNING, status_version

        stale = encode(msgspec_replace(done, status=JobStatus.PROCESSING))
        assert await results.set(job_key(job_id), stale, version=status_version(0, 0, 1, PHASE_RUNNING)) is False
        assert (await server.get_job(job_id)).status is JobStatus.SUCCESSFUL

    async def test_enqueueing_an_existing_id_does_not_run_it_twice(self, server: Server) -> None:
        self.capabilities.require("dedupe")
        runs: list[str] = []

        @server.task("once")
        async def once(payload: bytes, ctx: JobCtx) -> None:
            runs.append(ctx.meta.id)

        ids = {await server.enqueue(Job("once", b"", JobOpts(id="fixed-id"))) for _ in range(5)}
        assert ids == {"fixed-id"}
        async with running(server):
            await server.wait("fixed-id", timeout=10)
            await server.enqueue(Job("once", b"", JobOpts(id="fixed-id")))
            marker = await server.enqueue(Job("once", b""))
            await server.wait(marker, timeout=10)
        assert runs.count("fixed-id") == 1

    async def test_delete_job_forgets_message_result_and_lists(self, server: Server) -> None:
        @server.task("r")
        async def r(payload: bytes, ctx: JobCtx) -> bytes:
            return b"result"

        job_id = await server.enqueue(Job("r", b""))
        async with running(server):
            await server.wait(job_id, timeout=10)
        await server.delete_job(job_id)
        with pytest.raises(NotFoundError):
            await server.get_job(job_id)
        with pytest.raises(NotFoundError):
            await server.get_result(job_id)
        assert job_id not in await server.get_success()

    async def test_a_recurring_job_schedules_its_next_run_first(self, server: Server, broker: Broker) -> None:
        self.capabilities.require("delayed")

        @server.task("tick", queue="ticks")
        async def tick(payload: bytes, ctx: JobCtx) -> None:
            raise RuntimeError("a failed run must not end the schedule")

        schedule_id = await server.enqueue(Job("tick", b"", JobOpts(schedule="* * * * *", queue="ticks")))
        (first,) = await server.get_pending("ticks")
        assert first.id == schedule_id and first.schedule == "* * * * *"
        assert first.job.opts.eta is not None and first.job.opts.eta > datetime.now(UTC)
        # A run due now, instead of waiting for the minute to turn: same schedule, its own id.
        now = datetime.now(UTC)
        due = msgspec_replace(first, id="run-now", job=msgspec_replace(first.job, opts=msgspec_replace(first.job.opts, eta=now)))
        # Stored first, as enqueue does: wait() refuses an id that nothing stored.
        await server.results.set(job_key("run-now"), encode(due), version=0)
        await broker.enqueue("ticks", [Envelope("run-now", encode(due))])
        async with running(server):
            await eventually(lambda: _recorded(server, "run-now"))  # published bare: no record until a worker writes one
            done = await server.wait("run-now", timeout=10)
            pending = await server.get_pending("ticks")
        assert done.status is JobStatus.FAILED
        nxt = [m for m in pending if m.id not in (schedule_id, "run-now")]
        assert len(nxt) == 1 and nxt[0].schedule_id == schedule_id and nxt[0].schedule == "* * * * *"
        assert nxt[0].job.opts.eta is not None and nxt[0].job.opts.eta > now

        await server.cancel_schedule(schedule_id)
        with pytest.raises(NotFoundError):
            await server.cancel_schedule(schedule_id)

    async def test_task_options_reject_conflicting_concurrency(self, server: Server) -> None:
        async def h(payload: bytes, ctx: JobCtx) -> None:
            return None

        server.register_task("a", h, TaskOpts(queue="q", concurrency=2))
        server.register_task("b", h, TaskOpts(queue="q"))
        server.register_task("c", h, TaskOpts(queue="q", concurrency=2))
        with pytest.raises(ValueError, match="concurrency"):
            server.register_task("d", h, TaskOpts(queue="q", concurrency=3))


async def _recorded(server: Server, job_id: str) -> bool:
    """Whether the job has a record: ``wait`` on an id that has none raises ``NotFoundError``."""
    return await server.results.get_many([job_key(job_id)]) != [None]


D = TypeVar("D", GroupMessage, ChainMessage)


async def _done(awaitable: Awaitable[D]) -> D | None:
    """The group or chain once it has finished, else None (for ``eventually``)."""
    doc = await awaitable
    return doc if doc.status in (JobStatus.SUCCESSFUL, JobStatus.FAILED) else None


S = TypeVar("S", bound=msgspec.Struct)


def msgspec_replace(obj: S, **changes: Any) -> S:
    return msgspec.structs.replace(obj, **changes)
