"""``InspectorSuite``: the ``Inspector`` (counts, pages, a job's story, actions, pause, workers,
schedules) over a backend's control plane, driven through a real Server and worker."""

from __future__ import annotations

import asyncio
import os
import socket
from datetime import UTC, datetime, timedelta

import pytest

from tasqueue.broker import Broker
from tasqueue.control import JobState, control_of
from tasqueue.errors import NotFoundError
from tasqueue.inspector import Inspector, JobFilter
from tasqueue.jobs import Backoff, Job, JobOpts
from tasqueue.messages import JobStatus
from tasqueue.results import Results
from tasqueue.server import Server
from tasqueue.tasks import JobCtx
from tasqueue.testing._common import BrokerFixture, ResultsFixtures, eventually, running

LATER = timedelta(hours=1)


class Boom(Exception):
    pass


@pytest.mark.asyncio
class InspectorSuite(BrokerFixture, ResultsFixtures):
    """Subclass and override the ``broker`` and ``results_factory`` fixtures (see ``tasqueue.testing``)."""

    @pytest.fixture(autouse=True)
    def _needs_a_control_plane(self) -> None:
        self.capabilities.require("inspect")

    @pytest.fixture
    def server(self, broker: Broker, results: Results) -> Server:
        return Server(broker, results, load_entrypoints=False, shutdown_timeout=0.5, fetch_timeout=0.2)

    @pytest.fixture
    def inspector(self, server: Server) -> Inspector:
        return Inspector(server)

    async def test_the_broker_has_a_control_plane(self, broker: Broker) -> None:
        assert control_of(broker) is not None

    async def test_counts_every_state_per_queue(self, server: Server, inspector: Inspector) -> None:
        self.capabilities.require("delayed")
        release = asyncio.Event()

        @server.task("ok", queue="iq", concurrency=4)
        async def ok(payload: bytes, ctx: JobCtx) -> bytes:
            return payload

        @server.task("bad", queue="iq")
        async def bad(payload: bytes, ctx: JobCtx) -> None:
            raise Boom(payload.decode())

        @server.task("slow", queue="iq")
        async def slow(payload: bytes, ctx: JobCtx) -> None:
            await release.wait()

        now = datetime.now(UTC)
        done = [await server.enqueue(Job("ok", b"x", JobOpts(queue="iq"))) for _ in range(3)]
        failed = [await server.enqueue(Job("bad", b"no", JobOpts(queue="iq"))) for _ in range(2)]
        retry = Job("bad", b"later", JobOpts(queue="iq", max_retries=3, backoff=Backoff(initial=3600, jitter=False)))
        retrying = await server.enqueue(retry)
        slow_id = await server.enqueue(Job("slow", b"", JobOpts(queue="iq")))
        await server.enqueue(Job("ok", b"", JobOpts(queue="iq", eta=now + LATER)))
        for _ in range(4):
            await server.enqueue(Job("ok", b"", JobOpts(queue="iq-nobody")))
        expected = {"queued": 0, "delayed": 1, "running": 1, "retrying": 1, "successful": 3, "failed": 2}
        async with running(server):
            for job_id in [*done, *failed]:
                await server.wait(job_id, timeout=10)

            async def settled() -> bool:
                counts = (await inspector.queue("iq")).counts
                return {s.value: counts.get(s) for s in JobState} == expected

            await eventually(settled)
            counts = (await inspector.queue("iq")).counts
            assert (counts.total_successful, counts.total_failed, counts.paused) == (3, 2, False)
            # Each job is listed in the one state it is counted in.
            assert [j.id for j in (await inspector.jobs("iq", JobState.RETRYING)).jobs] == [retrying]
            assert retrying not in [j.id for j in (await inspector.jobs("iq", JobState.DELAYED)).jobs]
            assert [j.id for j in (await inspector.jobs("iq", JobState.RUNNING)).jobs] == [slow_id]
            assert {j.id for j in (await inspector.jobs("iq", JobState.FAILED)).jobs} == set(failed)
            idle = (await inspector.queue("iq-nobody")).counts
            assert (idle.queued, idle.running, idle.successful) == (4, 0, 0)
            names = [q.name for q in await inspector.queues()]
            assert {"iq", "iq-nobody"} <= set(names)
            assert names == sorted(names)
            assert (await server.get_job(retrying)).status is JobStatus.RETRYING
            assert (await server.get_job(slow_id)).status is JobStatus.PROCESSING
            release.set()
            await server.wait(slow_id, timeout=10)

    async def test_pages_follow_the_cursor_in_both_directions(self, server: Server, inspector: Inspector) -> None:
        self.capabilities.require("delayed")
        base = datetime.now(UTC) + LATER
        ids = [await server.enqueue(Job("t", b"", JobOpts(queue="pq", eta=base + timedelta(seconds=i)))) for i in range(7)]
        seen: list[str] = []
        cursor = None
        while True:
            page = await inspector.jobs("pq", JobState.DELAYED, cursor=cursor, limit=3, newest_first=False)
            seen += [j.id for j in page.jobs]
            assert all(j.state is JobState.DELAYED and j.task == "t" for j in page.jobs)
            if page.cursor is None:
                break
            # Jobs added meanwhile (due later) neither repeat nor hide the ones already there.
            await server.enqueue(Job("t", b"", JobOpts(queue="pq", eta=base + timedelta(days=1))))
            cursor = page.cursor
        assert seen[:7] == ids
        assert len(seen) == len(set(seen))
        newest = await inspector.jobs("pq", JobState.DELAYED, limit=3)
        assert [j.id for j in newest.jobs][-1] != ids[0]
        assert newest.jobs[0].at is not None and newest.jobs[0].at > newest.jobs[-1].at  # type: ignore[operator]

    async def test_queued_jobs_page_oldest_or_newest_first(self, server: Server, inspector: Inspector) -> None:
        ids = [await server.enqueue(Job("t", str(i).encode(), JobOpts(queue="qq"))) for i in range(5)]
        first = await inspector.jobs("qq", JobState.QUEUED, limit=2, newest_first=False)
        second = await inspector.jobs("qq", JobState.QUEUED, limit=2, newest_first=False, cursor=first.cursor)
        third = await inspector.jobs("qq", JobState.QUEUED, limit=2, newest_first=False, cursor=second.cursor)
        assert [j.id for p in (first, second, third) for j in p.jobs] == ids
        assert third.cursor is None
        newest = await inspector.jobs("qq", JobState.QUEUED, limit=5)
        assert [j.id for j in newest.jobs] == ids[::-1]
        assert newest.jobs[0].payload_size == 1

    async def test_a_failed_jobs_story_has_its_error_and_traceback(self, server: Server, inspector: Inspector) -> None:
        @server.task("explode")
        async def explode(payload: bytes, ctx: JobCtx) -> None:
            raise Boom("kaput " + payload.decode())

        @server.task("fine")
        async def fine(payload: bytes, ctx: JobCtx) -> bytes:
            return b"r" * 1234

        bad = await server.enqueue(Job("explode", b"now"))
        good = await server.enqueue(Job("fine", b"p" * 10))
        async with running(server):
            await server.wait(bad, timeout=10)
            await server.wait(good, timeout=10)
        story = await inspector.job(bad)
        assert story.state is JobState.FAILED
        assert story.message.prev_err == "Boom: kaput now"
        assert "in explode" in story.traceback and "Boom: kaput now" in story.traceback
        assert story.result_size is None
        ok = await inspector.job(good)
        assert (ok.state, ok.result_size, ok.payload_size, ok.traceback) == (JobState.SUCCESSFUL, 1234, 10, "")
        assert ok.message.processed_at is not None and ok.message.enqueued_at is not None
        with pytest.raises(NotFoundError):
            await inspector.job("no-such-job")

    async def test_retry_all_failed_of_a_queue_runs_them_again(self, server: Server, inspector: Inspector) -> None:
        broken = True
        runs: list[str] = []

        @server.task("flaky", queue="rq")
        async def flaky(payload: bytes, ctx: JobCtx) -> None:
            runs.append(ctx.meta.id)
            if broken:
                raise Boom("down")

        ids = [await server.enqueue(Job("flaky", b"", JobOpts(queue="rq"))) for _ in range(3)]
        async with running(server):
            for job_id in ids:
                assert (await server.wait(job_id, timeout=10)).status is JobStatus.FAILED
            await eventually(lambda: _count(inspector, "rq", JobState.FAILED, 3))
            page = await inspector.jobs("rq", JobState.FAILED)
            assert {j.id for j in page.jobs} == set(ids)
            assert all(j.error == "Boom: down" for j in page.jobs)
            assert await inspector.count(JobFilter("rq", JobState.FAILED, "flaky")) == 3
            broken = False
            report = await inspector.retry(JobFilter("rq", JobState.FAILED))
            assert (report.matched, report.done) == (3, 3)
            for job_id in ids:
                assert (await server.wait(job_id, timeout=10)).status is JobStatus.SUCCESSFUL
            await eventually(lambda: _count(inspector, "rq", JobState.SUCCESSFUL, 3))
        assert (await inspector.queue("rq")).counts.failed == 0
        assert sorted(runs) == sorted(ids * 2)
        assert set(await server.get_failed()).isdisjoint(ids)

    async def test_retry_by_id_skips_jobs_that_did_not_fail(self, server: Server, inspector: Inspector) -> None:
        queued = await server.enqueue(Job("t", b"", JobOpts(queue="sq")))
        report = await inspector.retry([queued, "missing"])
        assert (report.matched, report.done, sorted(report.skipped)) == (2, 0, sorted([queued, "missing"]))

    async def test_run_now_makes_a_delayed_job_ready(self, server: Server, inspector: Inspector) -> None:
        self.capabilities.require("delayed")

        @server.task("later", queue="dq")
        async def later(payload: bytes, ctx: JobCtx) -> None:
            return None

        job_id = await server.enqueue(Job("later", b"", JobOpts(queue="dq", eta=datetime.now(UTC) + LATER)))
        assert (await inspector.queue("dq")).counts.delayed == 1
        async with running(server):
            report = await inspector.run_now([job_id])
            assert report.done == 1
            assert (await server.wait(job_id, timeout=10)).status is JobStatus.SUCCESSFUL

    async def test_delete_and_purge_remove_jobs_and_their_records(self, server: Server, inspector: Inspector) -> None:
        ids = [await server.enqueue(Job("t", b"", JobOpts(queue="xq"))) for _ in range(5)]
        one = await inspector.delete([ids[0]])
        assert one.done == 1
        with pytest.raises(NotFoundError):
            await server.get_job(ids[0])
        assert (await inspector.queue("xq")).counts.queued == 4
        report = await inspector.purge("xq")
        assert (report.matched, report.done) == (4, 4)
        assert (await inspector.queue("xq")).counts.queued == 0
        assert await server.get_pending("xq") == []
        for job_id in ids[1:]:
            with pytest.raises(NotFoundError):
                await server.get_job(job_id)

    async def test_purge_by_task_keeps_the_other_tasks(self, server: Server, inspector: Inspector) -> None:
        keep = [await server.enqueue(Job("keep", b"", JobOpts(queue="tq"))) for _ in range(2)]
        drop = [await server.enqueue(Job("drop", b"", JobOpts(queue="tq"))) for _ in range(3)]
        report = await inspector.purge("tq", [JobState.QUEUED], task="drop")
        assert report.done == 3
        left = await inspector.jobs("tq", JobState.QUEUED, newest_first=False)
        assert [j.id for j in left.jobs] == keep
        with pytest.raises(NotFoundError):
            await server.get_job(drop[0])

    async def test_a_running_job_is_not_deleted(self, server: Server, inspector: Inspector) -> None:
        release = asyncio.Event()

        @server.task("hold")
        async def hold(payload: bytes, ctx: JobCtx) -> None:
            await release.wait()

        job_id = await server.enqueue(Job("hold", b""))
        async with running(server):
            await eventually(lambda: _status(server, job_id, JobStatus.PROCESSING))
            report = await inspector.delete([job_id])
            assert (report.done, report.skipped) == (0, [job_id])
            with pytest.raises(ValueError, match="running"):
                await inspector.delete(JobFilter("tasqueue:tasks", JobState.RUNNING))
            release.set()
            assert (await server.wait(job_id, timeout=10)).status is JobStatus.SUCCESSFUL

    async def test_pause_stops_fetching_and_resume_restarts_it(self, server: Server, inspector: Inspector) -> None:
        ran: list[str] = []

        @server.task("a", queue="pa")
        async def a(payload: bytes, ctx: JobCtx) -> None:
            ran.append(ctx.meta.id)

        @server.task("b", queue="pb")
        async def b(payload: bytes, ctx: JobCtx) -> None:
            ran.append(ctx.meta.id)

        async with running(server):
            await inspector.pause("pa")
            assert (await inspector.queue("pa")).paused
            await eventually(lambda: _worker_paused(inspector, "pa"))
            held = await server.enqueue(Job("a", b"", JobOpts(queue="pa")))
            marker = await server.enqueue(Job("b", b"", JobOpts(queue="pb")))
            await server.wait(marker, timeout=10)
            # The worker took the other queue's later job, yet left the paused queue's alone.
            assert held not in ran
            assert (await inspector.queue("pa")).counts.queued == 1
            await inspector.resume("pa")
            assert (await server.wait(held, timeout=10)).status is JobStatus.SUCCESSFUL
        assert not (await inspector.queue("pa")).paused

    async def test_live_workers_report_their_jobs(self, server: Server, inspector: Inspector) -> None:
        release = asyncio.Event()

        @server.task("hold", queue="wq", concurrency=3)
        async def hold(payload: bytes, ctx: JobCtx) -> None:
            await release.wait()

        job_id = await server.enqueue(Job("hold", b"", JobOpts(queue="wq")))
        async with running(server):

            async def reported() -> bool:
                workers = await inspector.workers()
                return len(workers) == 1 and workers[0].in_flight.get("wq") == [job_id]

            await eventually(reported)
            (w,) = await inspector.workers()
            assert (w.host, w.pid, w.queues) == (socket.gethostname(), os.getpid(), {"wq": 3})
            assert w.started <= w.heartbeat
            assert (await inspector.queue("wq")).workers == 1
            release.set()
            await server.wait(job_id, timeout=10)
        assert await inspector.workers() == []

    async def test_schedules_show_their_next_run_until_cancelled(self, server: Server, inspector: Inspector) -> None:
        self.capabilities.require("delayed")
        sid = await server.enqueue(Job("tick", b"", JobOpts(queue="cq", schedule="*/5 * * * *")))
        (s,) = await inspector.schedules()
        assert (s.id, s.task, s.queue, s.cron) == (sid, "tick", "cq", "*/5 * * * *")
        assert s.next_run is not None and s.next_run > datetime.now(UTC)
        assert s.next_run.minute % 5 == 0
        await server.cancel_schedule(sid)
        assert await inspector.schedules() == []


async def _count(inspector: Inspector, queue: str, state: JobState, n: int) -> bool:
    return (await inspector.queue(queue)).counts.get(state) == n


async def _status(server: Server, job_id: str, status: JobStatus) -> bool:
    try:
        return (await server.get_job(job_id)).status is status
    except NotFoundError:
        return False


async def _worker_paused(inspector: Inspector, queue: str) -> bool:
    return any(queue in w.paused for w in await inspector.workers())
