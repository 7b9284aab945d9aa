"""Task handles and typed payloads on memory://: what ``@srv.task`` returns, encodes, decodes and raises."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta
from typing import TypedDict

import msgspec
import pytest

from tasqueue import (
    Chain,
    Job,
    JobCtx,
    JobFailedError,
    JobOpts,
    JobStatus,
    NotFoundError,
    PayloadError,
    Server,
    TaskHandle,
)
from tasqueue.testing import Harness, running

pytestmark = pytest.mark.asyncio


class AddArgs(msgspec.Struct, frozen=True):
    a: int
    b: int


@dataclasses.dataclass
class Point:
    x: float
    y: float


class Greeting(TypedDict):
    name: str


class Sum(msgspec.Struct, frozen=True):
    total: int
    terms: list[int]


def make_server() -> Server:
    return Server(load_entrypoints=False)


async def test_a_typed_task_takes_and_returns_its_types() -> None:
    srv = make_server()

    @srv.task(queue="math")
    async def add(args: AddArgs) -> Sum:
        return Sum(total=args.a + args.b, terms=[args.a, args.b])

    @srv.task
    def norm(p: Point, ctx: JobCtx) -> float:
        assert ctx.meta.job.task == norm.name
        return (p.x**2 + p.y**2) ** 0.5

    @srv.task
    async def greet(g: Greeting) -> str:
        return f"hello {g['name']}"

    async with Harness(srv) as tq:
        ids = [await add.enqueue(AddArgs(a=1, b=2)), await norm.enqueue(Point(3, 4)), await greet.enqueue({"name": "ada"})]
        await tq.drain()
        assert await add.result(ids[0]) == Sum(total=3, terms=[1, 2])
        assert await norm.result(ids[1]) == 5.0
        assert await greet.result(ids[2]) == "hello ada"
        # The Server decodes by the job's task when it has the handle, or as the type it is told.
        assert await srv.result(ids[0]) == Sum(total=3, terms=[1, 2])
        assert await srv.result(ids[0], type=dict) == {"total": 3, "terms": [1, 2]}
        # The bytes layer underneath is plain msgpack.
        assert msgspec.msgpack.decode(await srv.get_result(ids[0])) == {"total": 3, "terms": [1, 2]}
        assert (await srv.get_job(ids[0])).queue == "math"


async def test_the_handle_keeps_the_function_and_knows_its_task() -> None:
    srv = make_server()

    @srv.task(queue="math")
    async def add(args: AddArgs) -> int:
        return args.a + args.b

    @srv.task("custom-name")
    def mul(args: AddArgs, ctx: JobCtx) -> int:
        return args.a * args.b

    assert isinstance(add, TaskHandle)
    assert await add(AddArgs(a=2, b=3)) == 5
    assert add.name == f"{__name__}.test_the_handle_keeps_the_function_and_knows_its_task.<locals>.add"
    assert (add.queue, mul.name, mul.queue) == ("math", "custom-name", "tasqueue:tasks")
    assert set(srv.get_tasks()) == {add.name, "custom-name"}
    job = add.job(AddArgs(a=1, b=1), eta=None, max_retries=4)
    assert (job.task, job.opts.queue, job.opts.max_retries) == (add.name, "math", 4)
    assert msgspec.msgpack.decode(job.payload, type=AddArgs) == AddArgs(a=1, b=1)


async def test_a_payload_that_does_not_fit_is_refused_at_enqueue_with_msgspecs_reason() -> None:
    srv = make_server()

    @srv.task
    async def add(args: AddArgs) -> int:
        return args.a + args.b

    with pytest.raises(PayloadError, match=r"does not fit AddArgs: Expected `int`, got `str` - at `\$.a`"):
        await add.enqueue(AddArgs(a="1", b=2))  # type: ignore[arg-type]  # the point of the test
    with pytest.raises(PayloadError, match="does not fit AddArgs"):
        add.job({"a": 1})  # type: ignore[arg-type]
    assert await srv.get_pending(add.queue) == []


async def test_a_payload_that_arrives_broken_fails_the_job_at_once_without_retries() -> None:
    srv = make_server()
    runs = 0

    @srv.task(max_retries=5)
    async def add(args: AddArgs) -> int:
        nonlocal runs
        runs += 1
        return args.a + args.b

    async with Harness(srv) as tq:
        # An old producer's shape, and bytes that are not msgpack at all, sent by name.
        old = await srv.enqueue(Job(add.name, msgspec.msgpack.encode({"a": 1})))
        garbage = await srv.enqueue(Job(add.name, b"\xc1not msgpack"))
        await tq.drain()
        for job_id in (old, garbage):
            msg = await srv.get_job(job_id)
            assert (msg.status, msg.retried) == (JobStatus.FAILED, 0)
            assert msg.prev_err.startswith(f"PayloadError: the payload of task {add.name!r} does not fit AddArgs")
        assert "Object missing required field `b`" in (await srv.get_job(old)).prev_err
        assert runs == 0
        with pytest.raises(JobFailedError) as failed:
            await add.result(old)
        assert failed.value.error_type == "PayloadError"


async def test_bytes_handlers_are_registered_as_they_are() -> None:
    srv = make_server()

    async def upper(payload: bytes, ctx: JobCtx) -> bytes:
        return payload.upper()

    handle = srv.task("upper")(upper)
    assert srv.tasks["upper"].handler is upper  # no wrapper: the zero-cost path
    async with Harness(srv) as tq:
        job_id = await handle.enqueue(b"abc")
        other = await srv.enqueue(Job("upper", b"xyz"))
        await tq.drain()
        assert await handle.result(job_id) == b"ABC"
        assert await srv.result(other) == b"XYZ"


async def test_task_defaults_apply_unless_the_job_overrides_them() -> None:
    srv = make_server()
    runs: dict[str, int] = {}

    @srv.task(max_retries=2, timeout=timedelta(seconds=30), queue="q")
    async def flaky(key: str, ctx: JobCtx) -> None:
        runs[key] = runs.get(key, 0) + 1
        raise RuntimeError("always")

    async with Harness(srv) as tq:
        by_default = await flaky.enqueue("default")
        overridden = await flaky.enqueue("override", max_retries=0)
        # A producer without the handle, by name: the worker applies the task's default.
        by_name = await srv.enqueue(Job(flaky.name, msgspec.msgpack.encode("by-name"), JobOpts(queue="q")))
        for _ in range(3):
            await tq.drain()
            tq.clock.advance(600)  # past any retry backoff
        await tq.drain()
        assert runs == {"default": 3, "override": 1, "by-name": 3}
        assert (await srv.get_job(by_default)).max_retry == 2
        assert (await srv.get_job(overridden)).max_retry == 0
        assert (await srv.get_job(by_name)).status is JobStatus.FAILED


async def test_a_failed_job_raises_with_its_id_error_and_traceback() -> None:
    srv = make_server()

    @srv.task
    def divide(args: AddArgs) -> float:
        return args.a / args.b

    async with Harness(srv) as tq:
        job_id = await divide.enqueue(AddArgs(a=1, b=0))
        await tq.drain()
        with pytest.raises(JobFailedError) as failed:
            await divide.result(job_id)
    err = failed.value
    assert (err.job_id, err.error_type, err.error) == (job_id, "ZeroDivisionError", "division by zero")
    assert "return args.a / args.b" in err.traceback
    assert err.traceback.rstrip().endswith("ZeroDivisionError: division by zero")
    assert str(err).startswith(f"job {job_id!r} failed: ZeroDivisionError: division by zero")


async def test_result_of_a_job_that_saved_nothing_is_none() -> None:
    srv = make_server()

    @srv.task
    async def fire(n: int) -> None:
        return None

    async with Harness(srv) as tq:
        job_id = await fire.enqueue(1)
        await tq.drain()
        assert await fire.result(job_id) is None


async def test_waiting_on_an_id_nobody_stored_says_so_at_once() -> None:
    srv = make_server()
    with pytest.raises(NotFoundError, match="'no-such-id' not found, so there is nothing to wait for"):
        await srv.wait("no-such-id")  # no timeout: it must not wait for ever
    with pytest.raises(NotFoundError, match="nothing to wait for"):
        await srv.result("no-such-id", timeout=5)


async def test_a_result_not_ready_in_time_raises_timeout_error_with_the_status() -> None:
    srv = make_server()

    @srv.task
    async def later(n: int) -> int:
        return n

    job_id = await later.enqueue(1)  # no worker runs
    with pytest.raises(TimeoutError, match=r"did not finish within 0.05s; it is queued"):
        await later.result(job_id, timeout=0.05)


async def test_handles_build_jobs_for_chains() -> None:
    srv = make_server()

    @srv.task
    async def double(n: int, ctx: JobCtx) -> int:
        prev = ctx.meta.prev_job_result
        return 2 * (n if prev is None else msgspec.msgpack.decode(prev, type=int))

    async with Harness(srv) as tq:
        chain_id = await srv.enqueue_chain(Chain([double.job(1), double.job(0), double.job(0)]))
        await tq.drain()
        chain = await srv.get_chain(chain_id)
        assert chain.status is JobStatus.SUCCESSFUL
        assert await double.result(chain.prev_jobs[-1]) == 8


async def test_a_handle_by_name_enqueues_for_a_worker_elsewhere() -> None:
    worker = make_server()

    @worker.task("add", queue="math")
    async def add(args: AddArgs) -> int:
        return args.a + args.b

    async with Harness(worker) as tq:
        # A producer that does not import the worker's code, sharing its backends.
        producer = Server(tq.broker, tq.results, load_entrypoints=False)
        remote: TaskHandle[AddArgs, int] = TaskHandle(producer, "add", payload=AddArgs, result=int, queue="math")
        job_id = await remote.enqueue(AddArgs(a=20, b=22))
        await tq.drain()
        assert await remote.result(job_id) == 42
        with pytest.raises(TypeError, match="no function in this process"):
            remote(AddArgs(a=1, b=2))


async def test_handler_signatures_that_cannot_work_are_refused_at_registration() -> None:
    srv = make_server()
    with pytest.raises(TypeError, match=r"must take \(payload\) or \(payload, ctx\), got 3 positional"):

        @srv.task
        async def three(a: int, b: int, c: int) -> None: ...

    class Local(msgspec.Struct):
        x: int

    def uses_local(p: Local) -> None: ...

    uses_local.__annotations__["p"] = "Local"  # as `from __future__ import annotations` leaves it
    with pytest.raises(TypeError, match="Define payload and result types at module level"):
        srv.task(uses_local)


async def test_sync_code_gets_typed_results_too() -> None:
    srv = make_server()

    @srv.task
    async def add(args: AddArgs) -> int:
        return args.a + args.b

    @srv.task
    async def fail(n: int) -> None:
        raise LookupError(n)

    async with running(srv):
        # What a web view in another thread does: blocking calls, on the worker's loop.
        job_id = await asyncio.to_thread(srv.sync.enqueue, add.job(AddArgs(a=2, b=2)))
        assert await asyncio.to_thread(lambda: srv.sync.result(job_id, timeout=10)) == 4
        failed_id = await asyncio.to_thread(srv.sync.enqueue, fail.job(7))
        with pytest.raises(JobFailedError, match="LookupError: 7"):
            await asyncio.to_thread(lambda: srv.sync.result(failed_id, timeout=10))
