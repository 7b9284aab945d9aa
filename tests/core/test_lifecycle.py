"""The job life cycle on memory://, beyond the conformance kit: callbacks, middleware, failures of the
backends themselves, leases, schedules and the odd handler."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from tasqueue import (
    Backoff,
    BrokerError,
    Delivery,
    Envelope,
    Job,
    JobCtx,
    JobMessage,
    JobOpts,
    JobStatus,
    Middleware,
    NotFoundError,
    Server,
    TaskOpts,
    Write,
)
from tasqueue.memory import MemoryBroker, MemoryResults
from tasqueue.middleware import EnqueueNext, ProcessNext
from tasqueue.testing import eventually, running

FAST = Backoff(initial=0.01, max=0.02)


def make_server(**kwargs: object) -> Server:
    options: dict[str, object] = {"backoff": FAST, "shutdown_timeout": 0.5, "load_entrypoints": False}
    options.update(kwargs)
    broker = options.pop("broker", MemoryBroker(visibility_timeout=0.5))
    results = options.pop("results", MemoryResults())
    return Server(broker, results, **options)  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_callbacks_fire_in_order_sync_and_async() -> None:
    srv = make_server()
    events: list[str] = []

    def processing(ctx: JobCtx) -> None:
        events.append(f"processing:{ctx.meta.status}")

    async def success(ctx: JobCtx) -> None:
        events.append("success")

    srv.register_task(
        "t",
        lambda payload, ctx: events.append("handler") or b"r",  # type: ignore[func-returns-value]
        TaskOpts(processing_cb=processing, success_cb=success),
    )
    job_id = await srv.enqueue(Job("t", b""))
    async with running(srv):
        await srv.wait(job_id, timeout=10)
    assert events == ["processing:processing", "handler", "success"]


@pytest.mark.asyncio
async def test_a_raising_callback_does_not_change_the_outcome(caplog: pytest.LogCaptureFixture) -> None:
    srv = make_server()

    def broken(ctx: JobCtx) -> None:
        raise RuntimeError("callback bug")

    async def ok(payload: bytes, ctx: JobCtx) -> bytes:
        return b"fine"

    srv.register_task("t", ok, TaskOpts(processing_cb=broken, success_cb=broken))
    job_id = await srv.enqueue(Job("t", b""))
    async with running(srv):
        done = await srv.wait(job_id, timeout=10)
    assert done.status is JobStatus.SUCCESSFUL
    assert "callback" in caplog.text and "callback bug" in caplog.text


@pytest.mark.asyncio
async def test_a_handler_returning_something_else_than_bytes_fails_clearly() -> None:
    srv = make_server()

    @srv.task("t")
    async def wrong(payload: bytes, ctx: JobCtx) -> bytes:
        return "text"  # type: ignore[return-value]

    job_id = await srv.enqueue(Job("t", b""))
    async with running(srv):
        done = await srv.wait(job_id, timeout=10)
    assert done.status is JobStatus.FAILED
    assert done.prev_err == "TypeError: the handler of task 't' returned str; return bytes or None"


@pytest.mark.asyncio
async def test_a_handler_may_raise_its_own_timeout_error() -> None:
    srv = make_server()

    @srv.task("t")
    async def raises(payload: bytes, ctx: JobCtx) -> None:
        raise TimeoutError("upstream API timed out")

    job_id = await srv.enqueue(Job("t", b"", JobOpts(timeout=30)))
    async with running(srv):
        done = await srv.wait(job_id, timeout=10)
    assert done.prev_err == "TimeoutError: upstream API timed out"


@pytest.mark.asyncio
async def test_a_sync_handler_past_its_timeout_sees_ctx_cancelled_and_its_run_fails() -> None:
    srv = make_server()
    release = threading.Event()
    observed: list[bool] = []

    @srv.task("t")
    def slow(payload: bytes, ctx: JobCtx) -> None:
        release.wait(10)
        observed.append(ctx.cancelled)

    job_id = await srv.enqueue(Job("t", b"", JobOpts(timeout=0.2)))
    async with running(srv):
        done = await srv.wait(job_id, timeout=10)
        release.set()
        await eventually(lambda: observed)
    assert done.status is JobStatus.FAILED and done.prev_err.startswith("JobTimeoutError")
    assert observed == [True]


request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


class SetsContext(Middleware):
    async def process(self, ctx: JobCtx, call_next: ProcessNext) -> bytes | None:
        token = request_id.set(ctx.meta.headers.get("request-id", "?"))
        try:
            return await call_next(ctx)
        finally:
            request_id.reset(token)


class AddsHeader(Middleware):
    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    async def enqueue(self, messages: Sequence[JobMessage], call_next: EnqueueNext) -> list[str]:
        for message in messages:
            message.headers["request-id"] = f"req-{message.job.task}"
        ids = await call_next(messages)
        self.batches.append(ids)
        return ids


@pytest.mark.asyncio
async def test_middleware_carries_headers_to_the_worker_and_context_into_sync_threads() -> None:
    adds = AddsHeader()
    srv = make_server(middleware=[adds, SetsContext()])
    seen: dict[str, str] = {}

    @srv.task("a")
    async def a(payload: bytes, ctx: JobCtx) -> None:
        seen["async"] = request_id.get()

    @srv.task("s")
    def s(payload: bytes, ctx: JobCtx) -> None:
        seen["sync"] = request_id.get()

    ids = await srv.enqueue_many([Job("a", b""), Job("s", b"")])
    assert adds.batches == [ids]  # a bulk enqueue reaches middleware as one batch
    assert (await srv.get_job(ids[0])).headers == {"request-id": "req-a"}
    async with running(srv):
        for job_id in ids:
            await srv.wait(job_id, timeout=10)
    assert seen == {"async": "req-a", "sync": "req-s"}


class Outer(Middleware):
    def __init__(self, log: list[str], name: str) -> None:
        self.log = log
        self.name = name

    async def process(self, ctx: JobCtx, call_next: ProcessNext) -> bytes | None:
        self.log.append(f"{self.name}>")
        try:
            result = await call_next(ctx)
        except Exception as exc:
            self.log.append(f"<{self.name}!{type(exc).__name__}")
            raise
        self.log.append(f"<{self.name}:{result!r}")
        return result


@pytest.mark.asyncio
async def test_process_middleware_is_an_onion_that_sees_results_errors_and_timeouts() -> None:
    log: list[str] = []
    srv = make_server(middleware=[Outer(log, "a"), Outer(log, "b")])

    @srv.task("t", concurrency=1)  # one at a time, so the log reads in order
    async def t(payload: bytes, ctx: JobCtx) -> bytes:
        if payload == b"boom":
            raise ValueError(payload)
        if payload == b"slow":
            await asyncio.sleep(30)
        return payload

    ok, boom, slow = [await srv.enqueue(Job("t", p, JobOpts(timeout=0.2))) for p in (b"ok", b"boom", b"slow")]
    async with running(srv):
        for job_id in (ok, boom, slow):
            await srv.wait(job_id, timeout=10)
    assert log == [
        *("a>", "b>", "<b:b'ok'", "<a:b'ok'"),
        *("a>", "b>", "<b!ValueError", "<a!ValueError"),
        *("a>", "b>", "<b!JobTimeoutError", "<a!JobTimeoutError"),
    ]


class FailingBroker(MemoryBroker):
    async def enqueue(self, queue: str, envelopes: Sequence[Envelope]) -> None:
        msg = "broker is down"
        raise ConnectionError(msg)


@pytest.mark.asyncio
async def test_a_failed_publish_leaves_no_queued_job_behind() -> None:
    srv = make_server(broker=FailingBroker())
    with pytest.raises(BrokerError, match=r"could not publish 1 job.*broker is down") as err:
        await srv.enqueue(Job("t", b"", JobOpts(id="j1")))
    assert isinstance(err.value.__cause__, ConnectionError)
    with pytest.raises(NotFoundError):
        await srv.get_job("j1")
    # nothing half-made is left for groups and chains either
    from tasqueue import Chain, Group

    with pytest.raises(BrokerError):
        await srv.enqueue_group(Group([Job("t", b"")], opts=__import__("tasqueue").GroupOpts(id="g")))
    with pytest.raises(NotFoundError):
        await srv.get_group("g")
    with pytest.raises(BrokerError):
        await srv.enqueue_chain(Chain([Job("t", b""), Job("t", b"")], opts=__import__("tasqueue").ChainOpts(id="c")))
    with pytest.raises(NotFoundError):
        await srv.get_chain("c")


class FlakyResults(MemoryResults):
    """Fails its first few batch writes, as a results store that restarts would."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def set_many(self, writes: Sequence[Write], *, success: Sequence[str] = (), failed: Sequence[str] = ()) -> list[bool]:
        if self.failures and any(w.key.startswith("job:") and w.version for w in writes):
            self.failures -= 1
            msg = "results store unavailable"
            raise ConnectionError(msg)
        return await super().set_many(writes, success=success, failed=failed)


@pytest.mark.asyncio
async def test_outcome_writes_are_retried_until_the_store_is_back(caplog: pytest.LogCaptureFixture) -> None:
    srv = make_server(results=FlakyResults(failures=3))

    @srv.task("t")
    async def t(payload: bytes, ctx: JobCtx) -> bytes:
        return b"kept"

    job_id = await srv.enqueue(Job("t", b""))
    async with running(srv):
        done = await srv.wait(job_id, timeout=10)
    assert done.status is JobStatus.SUCCESSFUL
    assert await srv.get_result(job_id) == b"kept"
    assert "results store unavailable" in caplog.text


class FlakyFetch(MemoryBroker):
    def __init__(self) -> None:
        super().__init__(visibility_timeout=0.5)
        self.failures = 3

    async def fetch(self, queue: str, max_count: int, *, timeout: float) -> list[Delivery]:
        if self.failures:
            self.failures -= 1
            msg = "connection reset"
            raise ConnectionError(msg)
        return await super().fetch(queue, max_count, timeout=timeout)


@pytest.mark.asyncio
async def test_the_worker_keeps_fetching_after_broker_errors() -> None:
    broker = FlakyFetch()
    srv = make_server(broker=broker)

    @srv.task("t")
    async def t(payload: bytes, ctx: JobCtx) -> None:
        return None

    job_id = await srv.enqueue(Job("t", b""))
    async with running(srv):
        assert (await srv.wait(job_id, timeout=10)).status is JobStatus.SUCCESSFUL
    assert broker.failures == 0


class LosesLeases(MemoryBroker):
    """A broker that reports every lease lost, as after a partition that outlived the lease."""

    def __init__(self) -> None:
        super().__init__(visibility_timeout=0.3)
        self.lost: list[str] = []

    async def extend(self, queue: str, deliveries: Sequence[Delivery]) -> list[Delivery]:
        self.lost += [d.id for d in deliveries]
        return list(deliveries)


@pytest.mark.asyncio
async def test_a_run_whose_lease_was_lost_is_cancelled_and_writes_nothing() -> None:
    broker = LosesLeases()
    srv = make_server(broker=broker)
    cancelled = asyncio.Event()

    @srv.task("t")
    async def t(payload: bytes, ctx: JobCtx) -> bytes:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return b"never"

    job_id = await srv.enqueue(Job("t", b""))
    async with running(srv):
        async with asyncio.timeout(10):
            await cancelled.wait()
        stored = await srv.get_job(job_id)
    assert job_id in broker.lost
    assert stored.status is JobStatus.PROCESSING  # left for whoever holds the lease now
    assert await srv.get_failed() == [] and await srv.get_success() == []


@pytest.mark.asyncio
async def test_a_redelivered_job_that_had_finished_is_not_run_again() -> None:
    broker = MemoryBroker(visibility_timeout=0.3)
    srv = make_server(broker=broker)
    runs: list[int] = []

    @srv.task("t")
    async def t(payload: bytes, ctx: JobCtx) -> None:
        runs.append(1)

    job_id = await srv.enqueue(Job("t", b""))
    async with running(srv):
        await srv.wait(job_id, timeout=10)
    # A worker finished the job, wrote its outcome and died before its ack reached the broker:
    # the broker still holds the message and hands it out again once the lease runs out.
    await broker.enqueue("tasqueue:tasks", [Envelope(job_id, msgspec.msgpack.encode(await srv.get_job(job_id)))])
    (held,) = await broker.fetch("tasqueue:tasks", 1, timeout=1)
    assert held.deliveries == 1
    async with running(srv):
        await eventually(lambda: not broker._queues["tasqueue:tasks"].items, timeout=10)
    assert runs == [1]
    assert (await srv.get_job(job_id)).status is JobStatus.SUCCESSFUL


@pytest.mark.asyncio
async def test_a_cancelled_schedule_drops_its_next_run_without_running_it() -> None:
    broker = MemoryBroker(visibility_timeout=0.5)
    srv = make_server(broker=broker)
    ran: list[str] = []

    @srv.task("tick")
    async def tick(payload: bytes, ctx: JobCtx) -> None:
        ran.append(ctx.meta.id)

    schedule_id = await srv.enqueue(Job("tick", b"", JobOpts(schedule="*/5 * * * *")))
    (first,) = await srv.get_pending()
    eta = first.job.opts.eta
    assert eta is not None and eta.minute % 5 == 0 and eta.second == 0 and eta > datetime.now(UTC)
    assert eta - datetime.now(UTC) <= timedelta(minutes=5)
    await srv.cancel_schedule(schedule_id)

    due = msgspec.structs.replace(first, id="due-run")
    await broker.enqueue("tasqueue:tasks", [Envelope("due-run", msgspec.msgpack.encode(due))])
    async with running(srv):
        await eventually(lambda: _empty_except(broker, schedule_id), timeout=10)
    assert ran == []
    with pytest.raises(NotFoundError):
        await srv.get_job("due-run")


async def _empty_except(broker: MemoryBroker, keep: str) -> bool:
    from tasqueue._codec import decode_job

    return [decode_job(p).id for p in await broker.get_pending("tasqueue:tasks")] == [keep]


@pytest.mark.asyncio
async def test_wait_gives_up_after_its_timeout() -> None:
    srv = make_server()
    job_id = await srv.enqueue(Job("nobody-runs-this", b""))
    with pytest.raises(TimeoutError):
        await srv.wait(job_id, timeout=0.1)


@pytest.mark.asyncio
async def test_expired_records_are_gone() -> None:
    results = MemoryResults(expiry=0.2)
    srv = make_server(results=results)
    job_id = await srv.enqueue(Job("t", b""))
    assert (await srv.get_job(job_id)).status is JobStatus.QUEUED

    async def gone() -> bool:
        try:
            await srv.get_job(job_id)
        except NotFoundError:
            return True
        return False

    await eventually(gone, timeout=5)
    # expired entries are also swept, not only hidden: memory stays bounded
    await results.set("other", b"x")
    assert f"job:{job_id}" not in results._data


@pytest.mark.asyncio
async def test_get_pending_shows_undecodable_bytes_as_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    srv = make_server()
    await srv.broker.enqueue("tasqueue:tasks", [Envelope("junk", b"\x00\x01")])
    good = await srv.enqueue(Job("t", b""))
    assert [m.id for m in await srv.get_pending()] == [good]
    assert "undecodable message is pending" in caplog.text


@pytest.mark.asyncio
async def test_workers_with_different_tasks_share_a_queue() -> None:
    # A rolling deploy, or specialised workers: a job reaching a worker without its task is
    # passed on, not failed, while another worker has the handler.
    shared = "memory://mixed-workers"
    a = Server(shared, shared, backoff=FAST, load_entrypoints=False, unknown_task_timeout=30)
    b = Server(shared, shared, backoff=FAST, load_entrypoints=False, unknown_task_timeout=30)
    ran: list[str] = []

    @a.task("only-on-a")
    async def on_a(payload: bytes, ctx: JobCtx) -> None:
        ran.append("a")

    @b.task("only-on-b")
    async def on_b(payload: bytes, ctx: JobCtx) -> None:
        ran.append("b")

    ids = await a.enqueue_many([Job("only-on-a" if n % 2 else "only-on-b", b"") for n in range(20)])
    async with running(a), running(b):
        done = [await a.wait(job_id, timeout=20) for job_id in ids]
    assert {m.status for m in done} == {JobStatus.SUCCESSFUL}
    assert sorted(ran) == ["a"] * 10 + ["b"] * 10


@pytest.mark.asyncio
async def test_a_task_no_worker_knows_fails_after_being_passed_on() -> None:
    srv = make_server(unknown_task_timeout=0.3)

    @srv.task("known")
    async def known(payload: bytes, ctx: JobCtx) -> None:
        return None

    job_id = await srv.enqueue(Job("unknown", b""))
    async with running(srv):
        done = await srv.wait(job_id, timeout=10)
    assert done.status is JobStatus.FAILED
    assert done.prev_err == "UnknownTaskError: no worker took task 'unknown' within 0.3s (this one has: known)"
    assert done.stalls == 0  # passing a job on is not a worker dying


@pytest.mark.asyncio
async def test_a_failed_publish_of_a_new_job_leaves_no_record_either() -> None:
    # Jobs with ids tasqueue makes up are stored and published at once; a failed publish still
    # takes the stored record back.
    results = MemoryResults()
    srv = make_server(broker=FailingBroker(), results=results)
    with pytest.raises(BrokerError, match="broker is down"):
        await srv.enqueue(Job("t", b""))
    with pytest.raises(BrokerError):
        await srv.enqueue_many([Job("t", b""), Job("t", b"")])
    assert not any(key.startswith("job:") for key in results._data)


class RefusingResults(MemoryResults):
    def __init__(self) -> None:
        super().__init__()
        self.refuse = True

    async def set_many(self, writes: Sequence[Write], *, success: Sequence[str] = (), failed: Sequence[str] = ()) -> list[bool]:
        if self.refuse:
            msg = "results store unavailable"
            raise ConnectionError(msg)
        return await super().set_many(writes, success=success, failed=failed)


@pytest.mark.asyncio
async def test_a_published_job_whose_record_failed_still_runs_and_is_recorded(caplog: pytest.LogCaptureFixture) -> None:
    results = RefusingResults()
    srv = make_server(results=results)

    @srv.task("t")
    async def t(payload: bytes, ctx: JobCtx) -> bytes:
        return b"ran"

    job_id = await srv.enqueue(Job("t", b""))  # not raised: the broker has it, a retry would duplicate it
    assert "could not store their records" in caplog.text
    with pytest.raises(NotFoundError):
        await srv.get_job(job_id)
    results.refuse = False
    async with running(srv):
        done = await srv.wait(job_id, timeout=10)
    assert done.status is JobStatus.SUCCESSFUL
    assert await srv.get_result(job_id) == b"ran"


@pytest.mark.asyncio
async def test_derived_ids_are_written_into_the_job_options() -> None:
    srv = make_server()

    @srv.task("parent")
    async def parent(payload: bytes, ctx: JobCtx) -> None:
        return None

    job_id = await srv.enqueue(Job("parent", b"", on_success=(Job("child", b""),)))
    assert (await srv.get_job(job_id)).job.opts.id is None  # made up by tasqueue
    async with running(srv):
        (child_id,) = (await srv.wait(job_id, timeout=10)).on_success_ids
    child = await srv.get_job(child_id)
    assert child.job.opts.id == child_id  # derived: an idempotency key, checked before publishing


class RefusesPublishes(MemoryBroker):
    """Refuses the first few publishes to one queue, as a broker that blips would."""

    def __init__(self, queue: str, refusals: int) -> None:
        super().__init__(visibility_timeout=0.5)
        self.queue = queue
        self.refusals = refusals
        self.refused = 0

    async def enqueue(self, queue: str, envelopes: Sequence[Envelope]) -> None:
        if queue == self.queue and self.refused < self.refusals:
            self.refused += 1
            msg = "blip"
            raise ConnectionError(msg)
        await super().enqueue(queue, envelopes)


@pytest.mark.asyncio
async def test_a_parent_whose_follow_ups_cannot_be_published_is_not_run_again_nor_parked() -> None:
    # Issue 8 case 3: the parent used to run again per failed publish, and be parked as
    # WorkerLostError after max_stalls of them although it succeeded every time.
    broker = RefusesPublishes("children", refusals=4)
    srv = make_server(broker=broker, max_stalls=1)
    parents: list[int] = []
    children: list[bytes | None] = []

    @srv.task("parent")
    async def parent(payload: bytes, ctx: JobCtx) -> bytes:
        parents.append(ctx.meta.retried)
        return b"from-parent"

    @srv.task("child", queue="children")
    async def child(payload: bytes, ctx: JobCtx) -> None:
        children.append(ctx.meta.prev_job_result)

    job_id = await srv.enqueue(Job("parent", b"", on_success=(Job("child", b"", JobOpts(queue="children")),) * 2))
    async with running(srv):
        done = await srv.wait(job_id, timeout=10)
        for child_id in done.on_success_ids:
            # Published once the parent's status is written, and here only after four refusals.
            await eventually(lambda cid=child_id: _stored(srv, cid), timeout=20)  # type: ignore[misc]
            await srv.wait(child_id, timeout=20)
    assert broker.refused == 4
    assert parents == [0]  # ran once: its outcome was recorded, only the follow-ups were sent again
    assert children == [b"from-parent", b"from-parent"]  # each follow-up ran once
    final = await srv.get_job(job_id)
    assert final.status is JobStatus.SUCCESSFUL and len(final.on_success_ids) == 2
    assert job_id in await srv.get_success() and job_id not in await srv.get_failed()


async def _stored(srv: Server, job_id: str) -> bool:
    return (await srv.results.get_many([f"job:{job_id}"]))[0] is not None


class DistantBroker(MemoryBroker):
    """A memory broker whose fetches take a network round trip, recording what was asked for."""

    def __init__(self, round_trip: float) -> None:
        super().__init__(visibility_timeout=5)
        self.round_trip = round_trip
        self.asked: list[int] = []

    async def fetch(self, queue: str, max_count: int, *, timeout: float) -> list[Delivery]:
        self.asked.append(max_count)
        await asyncio.sleep(self.round_trip)  # the wire, not a wait for a condition
        return await super().fetch(queue, max_count, timeout=timeout)


@pytest.mark.asyncio
async def test_short_jobs_are_prefetched_to_cover_the_fetch_round_trip() -> None:
    broker = DistantBroker(round_trip=0.02)
    srv = make_server(broker=broker)

    @srv.task("quick", concurrency=4)
    async def quick(payload: bytes, ctx: JobCtx) -> None:
        return None

    ids = await srv.enqueue_many([Job("quick", b"") for _ in range(400)])
    async with running(srv):
        await srv.wait(ids[-1], timeout=30)
    assert max(broker.asked) > 4  # leased beyond the free slots while jobs were finishing fast
    assert max(broker.asked) <= 8  # and never more than one extra round of the concurrency


@pytest.mark.asyncio
async def test_long_jobs_are_not_hoarded() -> None:
    broker = DistantBroker(round_trip=0.02)
    srv = make_server(broker=broker)

    @srv.task("slow", concurrency=2)
    async def slow(payload: bytes, ctx: JobCtx) -> None:
        await asyncio.sleep(0.3)  # the work itself

    ids = await srv.enqueue_many([Job("slow", b"") for _ in range(8)])
    async with running(srv):
        for job_id in ids:
            await srv.wait(job_id, timeout=30)
    assert max(broker.asked) <= 2  # other workers could take what this one cannot start


@pytest.mark.asyncio
async def test_shutdown_hands_prefetched_jobs_back_unstarted() -> None:
    broker = DistantBroker(round_trip=0.02)
    srv = make_server(broker=broker)
    ran: list[str] = []

    @srv.task("quick", concurrency=4)
    async def quick(payload: bytes, ctx: JobCtx) -> None:
        ran.append(ctx.meta.id)

    ids = await srv.enqueue_many([Job("quick", b"") for _ in range(2000)])
    async with running(srv):
        await eventually(lambda: len(ran) >= 300, timeout=30)
    queue = broker._queues["tasqueue:tasks"]
    assert not queue.leased  # nothing left leased to a worker that is gone
    pending = set(queue.ready)  # all of them: get_pending shows only the first page
    statuses = {job_id: (await srv.get_job(job_id)) for job_id in ids}
    done = {i for i, m in statuses.items() if m.status is JobStatus.SUCCESSFUL}
    assert done | pending == set(ids) and not done & pending  # every job ran once or waits
    assert all(m.stalls == 0 for m in statuses.values())
    assert max(broker.asked) > 4  # the scenario did prefetch


def decode(data: bytes) -> JobMessage:
    from tasqueue._codec import decode_job

    return decode_job(data)
