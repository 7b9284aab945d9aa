"""The engine's promises when handlers, callbacks, stores and users misbehave (issue 8), on memory://."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence

import msgspec
import pytest

from tasqueue import (
    Backoff,
    Delivery,
    Group,
    Job,
    JobCancelledError,
    JobCtx,
    JobOpts,
    JobStatus,
    NotFoundError,
    ResultsError,
    Server,
    Write,
)
from tasqueue._codec import encode
from tasqueue._keys import PHASE_DONE, job_key, status_version
from tasqueue.memory import MemoryBroker, MemoryResults
from tasqueue.testing import eventually, running

FAST = Backoff(initial=0.01, max=0.02)


def make_server(**kwargs: object) -> Server:
    options: dict[str, object] = {"backoff": FAST, "shutdown_timeout": 0.5, "load_entrypoints": False}
    options.update(kwargs)
    broker = options.pop("broker", MemoryBroker(visibility_timeout=0.5))
    results = options.pop("results", MemoryResults())
    return Server(broker, results, **options)  # type: ignore[arg-type]


# ---- case 1: one outcome the store refuses ----------------------------------------------------


class RefusesBigValues(MemoryResults):
    """A store that refuses any value over a size, as NATS does with payloads over 1 MB."""

    LIMIT = 1000

    async def set_many(self, writes: Sequence[Write], *, success: Sequence[str] = (), failed: Sequence[str] = ()) -> list[bool]:
        for w in writes:
            if len(w.value) > self.LIMIT:
                msg = f"value of {len(w.value)} bytes is over the limit of {self.LIMIT}"
                raise ResultsError(msg)
        return await super().set_many(writes, success=success, failed=failed)


@pytest.mark.asyncio
async def test_a_write_the_store_refuses_fails_that_job_and_the_others_flow_on() -> None:
    srv = make_server(results=RefusesBigValues())

    @srv.task("echo", concurrency=4)
    async def echo(payload: bytes, ctx: JobCtx) -> bytes:
        return payload * 2

    big = await srv.enqueue(Job("echo", b"x" * 600))  # a 1200-byte result
    small = await srv.enqueue_many([Job("echo", b"%d" % n) for n in range(20)])
    async with running(srv):
        refused = await srv.wait(big, timeout=10)
        for job_id in small:
            assert (await srv.wait(job_id, timeout=10)).status is JobStatus.SUCCESSFUL
        later = await srv.enqueue(Job("echo", b"after"))  # the worker still runs jobs
        assert (await srv.wait(later, timeout=10)).status is JobStatus.SUCCESSFUL
    assert refused.status is JobStatus.FAILED
    assert refused.prev_err.startswith("ResultsError: the results store refused this job's outcome")
    assert "over the limit" in refused.prev_err
    assert big in await srv.get_failed() and big not in await srv.get_success()


# ---- case 2: a timed-out sync handler and the thread pool -------------------------------------


@pytest.mark.asyncio
async def test_a_timed_out_sync_handler_keeps_its_slot_until_its_thread_ends() -> None:
    srv = make_server()
    release = threading.Event()
    started: list[str] = []
    concurrent_runs = 0
    most = 0
    lock = threading.Lock()

    @srv.task("sync", concurrency=1)
    def handler(payload: bytes, ctx: JobCtx) -> bytes:
        nonlocal concurrent_runs, most
        with lock:
            concurrent_runs += 1
            most = max(most, concurrent_runs)
        started.append(ctx.meta.id)
        if payload == b"stuck":
            release.wait(10)  # a handler that ignores ctx.cancelled
        with lock:
            concurrent_runs -= 1
        return b"ok"

    stuck = await srv.enqueue(Job("sync", b"stuck", JobOpts(timeout=0.2)))
    nxt = await srv.enqueue(Job("sync", b"next", JobOpts(timeout=0.5)))
    async with running(srv):
        assert (await srv.wait(stuck, timeout=10)).prev_err.startswith("JobTimeoutError")
        assert started == [stuck]  # the next job waits for the thread, it does not time out waiting
        assert (await srv.get_job(nxt)).status is JobStatus.QUEUED
        release.set()
        done = await srv.wait(nxt, timeout=10)
    assert done.status is JobStatus.SUCCESSFUL  # its timeout counted its own run only
    assert started == [stuck, nxt] and most == 1


# ---- case 4: a graceful stop while a callback runs --------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("outcome", ["success", "failed"])
async def test_a_stop_during_a_callback_records_the_outcome_once(outcome: str, caplog: pytest.LogCaptureFixture) -> None:
    srv = make_server(shutdown_timeout=0.1)
    in_callback = asyncio.Event()
    runs: list[str] = []

    async def slow_callback(ctx: JobCtx, exc: BaseException | None = None) -> None:
        in_callback.set()
        await asyncio.sleep(0.5)  # the callback's own work, longer than the grace period

    @srv.task("t", success_cb=slow_callback, failed_cb=slow_callback)
    async def t(payload: bytes, ctx: JobCtx) -> None:
        runs.append(ctx.meta.id)
        if outcome == "failed":
            raise RuntimeError("no")

    job_id = await srv.enqueue(Job("t", b""))
    async with running(srv):
        async with asyncio.timeout(10):
            await in_callback.wait()
    stored = await srv.get_job(job_id)
    assert stored.status is (JobStatus.SUCCESSFUL if outcome == "success" else JobStatus.FAILED)
    assert await srv.broker.get_pending("tasqueue:tasks") == []
    assert "handed job" not in caplog.text
    async with running(srv):  # nothing comes back to run again
        await srv.wait(await srv.enqueue(Job("t", b"marker")), timeout=10)
    assert runs.count(job_id) == 1


@pytest.mark.asyncio
async def test_a_stop_during_processing_cb_hands_the_job_back() -> None:
    srv = make_server(shutdown_timeout=0.1)
    in_callback = asyncio.Event()
    ran: list[int] = []

    async def processing(ctx: JobCtx) -> None:
        if not ctx.meta.released:
            in_callback.set()
            await asyncio.sleep(30)

    @srv.task("t", processing_cb=processing)
    async def t(payload: bytes, ctx: JobCtx) -> None:
        ran.append(ctx.meta.released)

    job_id = await srv.enqueue(Job("t", b""))
    async with running(srv):
        async with asyncio.timeout(10):
            await in_callback.wait()
    handed_back = await srv.get_job(job_id)
    assert handed_back.status is JobStatus.QUEUED and handed_back.released == 1
    async with running(srv):
        assert (await srv.wait(job_id, timeout=10)).status is JobStatus.SUCCESSFUL
    assert ran == [1]


# ---- case 5: jobs for a task on another queue -------------------------------------------------


@pytest.mark.asyncio
async def test_a_job_without_a_queue_goes_to_its_tasks_queue() -> None:
    srv = make_server()

    @srv.task("x", queue="elsewhere")
    async def x(payload: bytes, ctx: JobCtx) -> None:
        return None

    job_id = await srv.enqueue(Job("x", b""))
    assert (await srv.get_job(job_id)).queue == "elsewhere"
    async with running(srv):
        assert (await srv.wait(job_id, timeout=10)).status is JobStatus.SUCCESSFUL


@pytest.mark.asyncio
async def test_a_producer_that_does_not_know_the_task_still_gets_it_run() -> None:
    broker, results = MemoryBroker(visibility_timeout=0.5), MemoryResults()
    producer = make_server(broker=broker, results=results)
    worker = make_server(broker=broker, results=results)

    @worker.task("x", queue="elsewhere")
    async def x(payload: bytes, ctx: JobCtx) -> None:
        return None

    job_id = await producer.enqueue(Job("x", b""))  # the producer cannot know: the default queue
    async with running(worker):
        done = await producer.wait(job_id, timeout=10)
    assert done.status is JobStatus.SUCCESSFUL and done.queue == "elsewhere"


@pytest.mark.asyncio
async def test_a_job_no_worker_knows_ends_visibly_even_on_a_queue_no_task_uses() -> None:
    broker, results = MemoryBroker(visibility_timeout=0.5), MemoryResults()
    producer = make_server(broker=broker, results=results)
    worker = make_server(broker=broker, results=results, unknown_task_timeout=0.3)

    @worker.task("x", queue="elsewhere")
    async def x(payload: bytes, ctx: JobCtx) -> None:
        return None

    job_id = await producer.enqueue(Job("nobody-has-this", b""))
    async with running(worker):
        done = await producer.wait(job_id, timeout=10)
    assert done.status is JobStatus.FAILED and done.prev_err.startswith("UnknownTaskError")


# ---- case 7: group statuses after a failure ---------------------------------------------------


@pytest.mark.asyncio
async def test_a_failed_groups_other_jobs_keep_their_statuses_moving() -> None:
    srv = make_server()
    go_on = asyncio.Event()

    @srv.task("fail")
    async def fail(payload: bytes, ctx: JobCtx) -> None:
        raise RuntimeError("no")

    @srv.task("slow")
    async def slow(payload: bytes, ctx: JobCtx) -> None:
        await go_on.wait()

    group_id = await srv.enqueue_group(Group([Job("fail", b""), Job("slow", b"")]))
    async with running(srv):
        failing = await eventually(lambda: _group_failed(srv, group_id))
        slow_id = next(i for i, s in failing.job_status.items() if s is not JobStatus.FAILED)
        go_on.set()
        await srv.wait(slow_id, timeout=10)
        group = await srv.get_group(group_id)
    assert group.status is JobStatus.FAILED
    assert group.job_status[slow_id] is JobStatus.SUCCESSFUL
    assert (await srv.get_group(group_id)).job_status == group.job_status  # final now, and stored


async def _group_failed(srv: Server, group_id: str) -> object:
    group = await srv.get_group(group_id)
    return group if group.status is JobStatus.FAILED else None


# ---- case 10: the timeout path ----------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_handler_that_swallows_its_timeout_still_fails_and_saw_ctx_cancelled() -> None:
    srv = make_server()
    seen: list[bool] = []

    @srv.task("t")
    async def t(payload: bytes, ctx: JobCtx) -> bytes:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            seen.append(ctx.cancelled)
        return b"pretends to be done"

    job_id = await srv.enqueue(Job("t", b"", JobOpts(timeout=0.1)))
    async with running(srv):
        done = await srv.wait(job_id, timeout=10)
    assert done.status is JobStatus.FAILED and done.prev_err.startswith("JobTimeoutError")
    assert seen == [True]  # cancelled was already true when the handler saw the cancellation
    with pytest.raises(NotFoundError):
        await srv.get_result(job_id)


@pytest.mark.asyncio
async def test_a_timed_out_sync_handler_cannot_save_a_result_any_more() -> None:
    srv = make_server()
    timed_out = threading.Event()
    saved: list[BaseException | None] = []

    @srv.task("sync")
    def handler(payload: bytes, ctx: JobCtx) -> None:
        timed_out.wait(10)
        try:
            ctx.save_sync(b"late")
        except JobCancelledError as exc:
            saved.append(exc)
        else:
            saved.append(None)

    job_id = await srv.enqueue(Job("sync", b"", JobOpts(timeout=0.1)))
    async with running(srv):
        done = await srv.wait(job_id, timeout=10)
        timed_out.set()
        await eventually(lambda: saved)
    assert done.status is JobStatus.FAILED
    assert isinstance(saved[0], JobCancelledError)
    with pytest.raises(NotFoundError):
        await srv.get_result(job_id)


# ---- case 11: one id twice in one call --------------------------------------------------------


@pytest.mark.asyncio
async def test_one_id_on_two_queues_runs_once() -> None:
    srv = make_server()
    runs: list[str] = []

    @srv.task("t", queue="a")
    async def t(payload: bytes, ctx: JobCtx) -> None:
        runs.append(ctx.meta.queue)

    @srv.task("u", queue="b")
    async def u(payload: bytes, ctx: JobCtx) -> None:
        runs.append(ctx.meta.queue)

    ids = await srv.enqueue_many([Job("t", b"", JobOpts(id="same", queue="a")), Job("u", b"", JobOpts(id="same", queue="b"))])
    assert ids == ["same", "same"]
    # A later call with the id on another queue, while the first still waits, runs nothing more.
    await srv.enqueue(Job("u", b"", JobOpts(id="same", queue="b")))
    async with running(srv):
        await srv.wait("same", timeout=10)
        marker = await srv.enqueue(Job("u", b"", JobOpts(queue="b")))
        await srv.wait(marker, timeout=10)
    assert runs.count("a") == 1 and runs.count("b") == 1  # "same" ran once, on "a"; the marker on "b"


# ---- case 16: logs an operator can read -------------------------------------------------------


class DownForAWhile(MemoryBroker):
    def __init__(self, failures: int) -> None:
        super().__init__(visibility_timeout=0.5)
        self.failures = failures

    async def fetch(self, queue: str, max_count: int, *, timeout: float) -> list[Delivery]:
        if queue == "tasqueue:tasks" and self.failures:
            self.failures -= 1
            try:
                raise OSError("connection refused")
            except OSError as exc:
                raise ConnectionError("broker unreachable") from exc
        return await super().fetch(queue, max_count, timeout=timeout)


@pytest.mark.asyncio
async def test_an_outage_logs_one_line_per_change_of_state(caplog: pytest.LogCaptureFixture) -> None:
    broker = DownForAWhile(failures=6)
    srv = make_server(broker=broker)

    @srv.task("t")
    async def t(payload: bytes, ctx: JobCtx) -> None:
        return None

    caplog.set_level(logging.INFO, logger="tasqueue")
    job_id = await srv.enqueue(Job("t", b""))
    async with running(srv):
        await srv.wait(job_id, timeout=10)
    about = [r for r in caplog.records if "fetching from queue 'tasqueue:tasks'" in r.getMessage() and r.levelno >= logging.INFO]
    assert [r.levelname for r in about] == ["ERROR", "WARNING"]  # down (with the cause), back
    assert "caused by OSError: connection refused" in about[0].getMessage()
    assert about[0].exc_info is not None and about[1].exc_info is None  # the traceback once
    assert "works again" in about[1].getMessage()


@pytest.mark.asyncio
async def test_an_unknown_task_is_warned_about_once(caplog: pytest.LogCaptureFixture) -> None:
    srv = make_server(unknown_task_timeout=0.5)

    @srv.task("known")
    async def known(payload: bytes, ctx: JobCtx) -> None:
        return None

    ids = await srv.enqueue_many([Job("unknown", b""), Job("unknown", b"")])
    async with running(srv):
        for job_id in ids:
            assert (await srv.wait(job_id, timeout=10)).status is JobStatus.FAILED
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "no handler for task 'unknown'" in r.getMessage()]
    assert len(warnings) == 1


# ---- the status write fences an outcome (issue 9 case 2) ---------------------------------------


@pytest.mark.asyncio
async def test_a_finish_that_lost_to_another_commits_nothing() -> None:
    # Two deliveries of one attempt finish differently (the first worker lost its lease but
    # went on): the first status write wins, and the other run's list entry and follow-ups
    # never appear.
    results = MemoryResults()
    srv = make_server(results=results)

    @srv.task("t")
    async def t(payload: bytes, ctx: JobCtx) -> None:
        # Meanwhile the job's next delivery has failed it for good, on another worker.
        other = msgspec.structs.replace(ctx.meta, status=JobStatus.FAILED, prev_err="RuntimeError: other")
        version = status_version(0, 0, 2, PHASE_DONE)
        await results.set_many([Write(job_key(ctx.meta.id), encode(other), version=version)], failed=[ctx.meta.id])

    @srv.task("child")
    async def child(payload: bytes, ctx: JobCtx) -> None:
        raise AssertionError("a follow-up of the losing run must not be published")

    job_id = await srv.enqueue(Job("t", b"", on_success=(Job("child", b""),)))
    async with running(srv):
        marker = await srv.enqueue(Job("t", b"", JobOpts(id="marker")))
        await srv.wait(marker, timeout=10)
        await srv.wait(job_id, timeout=10)
    assert (await srv.get_job(job_id)).status is JobStatus.FAILED
    assert await srv.get_success() == []  # neither run's success was listed
    assert job_id in await srv.get_failed()
    assert await srv.broker.get_pending("tasqueue:tasks") == []  # no follow-up was published
