"""Spans on memory://: enqueue -> run is one trace, and errors, retries, timeouts and follow-ups show on it."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from opentelemetry import baggage, context, trace
from opentelemetry.trace import SpanKind, StatusCode

from tasqueue import Backoff, Chain, Group, Job, JobCtx, JobOpts, Server
from tasqueue.testing import eventually, running
from tasqueue_otel.middleware import PREV_ATTEMPT_HEADER

FAST_RETRY = Backoff(initial=0.01, jitter=False)


def parent_id(span: trace.Span | object) -> int | None:
    parent = getattr(span, "parent", None)
    return None if parent is None else parent.span_id


@pytest.mark.asyncio
async def test_run_is_a_child_of_the_enqueue_in_the_callers_trace(server: Server, otel) -> None:
    @server.task("add", queue="q1", concurrency=2)
    async def add(payload: bytes, ctx: JobCtx) -> bytes:
        return payload

    async with running(server):
        with otel.tracer.start_as_current_span("POST /add") as request:
            job_id = await server.enqueue(Job("add", b"12", JobOpts(queue="q1")))
        await server.wait(job_id, timeout=10)

    [send] = otel.sends(job_id)
    [run] = otel.runs(job_id)
    trace_id = request.get_span_context().trace_id
    assert send.name == "send q1"
    assert send.context.trace_id == trace_id
    assert parent_id(send) == request.get_span_context().span_id
    assert run.name == "process q1"
    assert run.context.trace_id == trace_id
    assert parent_id(run) == send.context.span_id
    assert run.parent.is_remote  # it came through the message's headers, not the local context
    assert dict(send.attributes) == {
        "messaging.system": "tasqueue",
        "messaging.destination.name": "q1",
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.message.id": job_id,
        "messaging.message.body.size": 2,
        "tasqueue.task.name": "add",
    }
    assert run.attributes["messaging.operation.type"] == "process"
    assert run.attributes["messaging.operation.name"] == "process"
    assert run.attributes["messaging.message.id"] == job_id
    assert run.attributes["tasqueue.job.outcome"] == "success"
    assert run.status.status_code is StatusCode.UNSET
    stored = await server.get_job(job_id)
    assert stored.headers["traceparent"].split("-")[1] == f"{trace_id:032x}"


@pytest.mark.asyncio
async def test_a_job_enqueued_outside_any_span_starts_its_own_trace(server: Server, otel) -> None:
    @server.task("noop")
    async def noop(payload: bytes, ctx: JobCtx) -> None:
        return None

    async with running(server):
        ids = [await server.enqueue(Job("noop", b"")) for _ in range(2)]
        for job_id in ids:
            await server.wait(job_id, timeout=10)

    sends = [otel.sends(i)[0] for i in ids]
    runs = [otel.runs(i)[0] for i in ids]
    assert all(s.parent is None for s in sends)
    assert [r.context.trace_id for r in runs] == [s.context.trace_id for s in sends]
    assert sends[0].context.trace_id != sends[1].context.trace_id


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_a_span_the_handler_opens_nests_under_the_run(server: Server, otel, kind: str) -> None:
    tracer = otel.tracer

    if kind == "async":

        async def handler(payload: bytes, ctx: JobCtx) -> bytes:
            with tracer.start_as_current_span("user work"):
                await asyncio.sleep(0)
            return b"done"

    else:

        def handler(payload: bytes, ctx: JobCtx) -> bytes:  # runs in a worker thread
            with tracer.start_as_current_span("user work"):
                pass
            return b"done"

    server.register_task("work", handler)
    async with running(server):
        job_id = await server.enqueue(Job("work", b""))
        await server.wait(job_id, timeout=10)

    [run] = otel.runs(job_id)
    [user] = otel.spans("user work")
    assert user.context.trace_id == run.context.trace_id
    assert parent_id(user) == run.context.span_id


@pytest.mark.asyncio
async def test_baggage_set_by_the_enqueuer_reaches_the_handler(server: Server) -> None:
    seen: list[object] = []

    @server.task("tenant")
    async def tenant(payload: bytes, ctx: JobCtx) -> None:
        seen.append(baggage.get_baggage("tenant.id"))

    async with running(server):
        token = context.attach(baggage.set_baggage("tenant.id", "acme"))
        try:
            job_id = await server.enqueue(Job("tenant", b""))
        finally:
            context.detach(token)
        await server.wait(job_id, timeout=10)
    assert seen == ["acme"]


@pytest.mark.asyncio
async def test_a_failure_marks_the_span_as_an_error_and_records_the_exception(server: Server, otel) -> None:
    @server.task("boom")
    async def boom(payload: bytes, ctx: JobCtx) -> None:
        raise ValueError("no such customer")

    async with running(server):
        job_id = await server.enqueue(Job("boom", b""))
        assert (await server.wait(job_id, timeout=10)).status == "failed"

    [run] = otel.runs(job_id)
    assert run.status.status_code is StatusCode.ERROR
    assert run.status.description == "ValueError: no such customer"
    assert run.attributes["error.type"] == "ValueError"
    assert run.attributes["tasqueue.job.outcome"] == "failure"
    assert run.attributes["tasqueue.job.will_retry"] is False
    [event] = [e for e in run.events if e.name == "exception"]
    assert event.attributes["exception.type"] == "ValueError"
    assert event.attributes["exception.message"] == "no such customer"


@pytest.mark.asyncio
async def test_retries_are_sibling_runs_under_the_send_linked_to_the_attempt_before(server: Server, otel) -> None:
    attempts = 0

    @server.task("flaky")
    async def flaky(payload: bytes, ctx: JobCtx) -> bytes:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise ConnectionError(f"attempt {attempts}")
        return b"ok"

    async with running(server):
        job_id = await server.enqueue(Job("flaky", b"", JobOpts(max_retries=3, backoff=FAST_RETRY)))
        assert (await server.wait(job_id, timeout=10)).status == "successful"

    [send] = otel.sends(job_id)
    runs = otel.runs(job_id)
    assert len(runs) == 3
    assert all(parent_id(r) == send.context.span_id for r in runs)
    assert [r.attributes["tasqueue.job.retry_count"] for r in runs] == [0, 1, 2]
    assert [r.attributes["tasqueue.job.outcome"] for r in runs] == ["retry", "retry", "success"]
    for n, run in enumerate(runs[:2]):
        assert run.status.status_code is StatusCode.ERROR
        assert run.attributes["tasqueue.job.will_retry"] is True
        [retry] = [e for e in run.events if e.name == "tasqueue.job.retry"]
        assert dict(retry.attributes) == {"tasqueue.job.retry_count": n + 1, "tasqueue.job.max_retries": 3}
    assert runs[0].links == ()
    for before, after in itertools.pairwise(runs):
        [link] = after.links
        assert link.context.span_id == before.context.span_id
        assert link.attributes["tasqueue.link.kind"] == "previous_attempt"
    assert PREV_ATTEMPT_HEADER in (await server.get_job(job_id)).headers


@pytest.mark.asyncio
async def test_a_timeout_is_recorded_as_a_job_timeout_error(server: Server, otel) -> None:
    @server.task("slow")
    async def slow(payload: bytes, ctx: JobCtx) -> None:
        await asyncio.Event().wait()  # never set: only the timeout ends it

    async with running(server):
        job_id = await server.enqueue(Job("slow", b"", JobOpts(timeout=0.05, max_retries=1, backoff=FAST_RETRY)))
        assert (await server.wait(job_id, timeout=10)).status == "failed"

    runs = otel.runs(job_id)
    assert [r.attributes["tasqueue.job.outcome"] for r in runs] == ["retry", "failure"]
    for run in runs:
        assert run.status.status_code is StatusCode.ERROR
        assert run.attributes["error.type"] == "tasqueue.errors.JobTimeoutError"
        assert run.attributes["tasqueue.job.timed_out"] is True
        assert run.attributes["tasqueue.job.timeout"] == 0.05


@pytest.mark.asyncio
async def test_a_run_cut_short_by_shutdown_is_interrupted_and_the_next_delivery_links_to_it(otel) -> None:
    srv = Server(plugins=[otel.plugin()], shutdown_timeout=0)
    started = asyncio.Event()
    runs = 0

    @srv.task("long")
    async def long(payload: bytes, ctx: JobCtx) -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            started.set()
            await asyncio.Event().wait()  # until the shutdown cancels it

    async with srv:
        async with running(srv):
            job_id = await srv.enqueue(Job("long", b""))
            await started.wait()
        assert (await srv.get_job(job_id)).status == "queued"  # handed back
        [cut] = otel.runs(job_id)
        assert cut.attributes["tasqueue.job.outcome"] == "interrupted"
        assert cut.status.status_code is StatusCode.UNSET
        assert [e.name for e in cut.events] == ["tasqueue.job.interrupted"]
        assert otel.total("tasqueue.jobs.failed") == 0
        assert otel.total("tasqueue.jobs.retried") == 0
        assert otel.total("tasqueue.job.duration", outcome="interrupted") == 1

        async with running(srv):
            assert (await srv.wait(job_id, timeout=10)).status == "successful"

    [send] = otel.sends(job_id)
    first, second = otel.runs(job_id)
    assert second.attributes["tasqueue.job.released"] == 1
    assert second.attributes["tasqueue.job.retry_count"] == 0
    assert parent_id(second) == send.context.span_id
    [link] = second.links
    assert link.context.span_id == first.context.span_id
    assert otel.total("tasqueue.jobs.succeeded") == 1


@pytest.mark.asyncio
async def test_follow_up_jobs_are_sent_from_inside_the_run_that_enqueued_them(server: Server, otel) -> None:
    @server.task("ok")
    async def ok(payload: bytes, ctx: JobCtx) -> bytes:
        return b"r"

    @server.task("bad")
    async def bad(payload: bytes, ctx: JobCtx) -> None:
        raise RuntimeError("bad")

    async with running(server):
        with otel.tracer.start_as_current_span("request") as request:
            a = await server.enqueue(Job("ok", b"", on_success=(Job("ok", b"after a", JobOpts(id="after-a")),)))
            b = await server.enqueue(Job("bad", b"", on_error=(Job("ok", b"after b", JobOpts(id="after-b")),)))
        assert (await server.wait(a, timeout=10)).on_success_ids == ["after-a"]
        assert (await server.wait(b, timeout=10)).status == "failed"
        after_a = (await server.wait("after-a", timeout=10)).id
        after_b = (await server.wait("after-b", timeout=10)).id

    trace_id = request.get_span_context().trace_id
    for parent, child in ((a, after_a), (b, after_b)):
        [parent_run] = otel.runs(parent)
        [child_send] = otel.sends(child)
        [child_run] = otel.runs(child)
        assert parent_id(child_send) == parent_run.context.span_id
        assert parent_id(child_run) == child_send.context.span_id
        assert child_run.context.trace_id == trace_id


@pytest.mark.asyncio
async def test_a_chain_is_one_trace_each_job_sent_by_the_one_before(server: Server, otel) -> None:
    @server.task("step")
    async def step(payload: bytes, ctx: JobCtx) -> bytes:
        return (ctx.meta.prev_job_result or b"") + payload

    async with running(server):
        with otel.tracer.start_as_current_span("request") as request:
            chain_id = await server.enqueue_chain(Chain([Job("step", b"a"), Job("step", b"b"), Job("step", b"c")]))
        first = (await server.get_chain(chain_id)).job_id
        await server.wait(first, timeout=10)

        async def finished() -> bool:
            return (await server.get_chain(chain_id)).status == "successful"

        await eventually(finished)
        jobs = (await server.get_chain(chain_id)).prev_jobs

    assert len(jobs) == 3
    previous = request.get_span_context().span_id
    for job_id in jobs:
        [send] = otel.sends(job_id)
        [run] = otel.runs(job_id)
        assert send.attributes["tasqueue.chain.id"] == chain_id
        assert parent_id(send) == previous
        assert parent_id(run) == send.context.span_id
        assert run.context.trace_id == request.get_span_context().trace_id
        previous = run.context.span_id


@pytest.mark.asyncio
async def test_each_job_of_a_group_is_sent_under_the_callers_span(server: Server, otel) -> None:
    @server.task("part")
    async def part(payload: bytes, ctx: JobCtx) -> None:
        return None

    async with running(server):
        with otel.tracer.start_as_current_span("request") as request:
            group_id = await server.enqueue_group(Group([Job("part", b"1"), Job("part", b"2")]))
        ids = list((await server.get_group(group_id)).job_status)
        for job_id in ids:
            await server.wait(job_id, timeout=10)

    for job_id in ids:
        [send] = otel.sends(job_id)
        [run] = otel.runs(job_id)
        assert parent_id(send) == request.get_span_context().span_id
        assert send.attributes["tasqueue.group.id"] == group_id
        assert run.attributes["tasqueue.group.id"] == group_id
        assert parent_id(run) == send.context.span_id


@pytest.mark.asyncio
async def test_a_failed_enqueue_ends_its_span_with_the_error(otel) -> None:
    class Unreachable(Exception):
        pass

    srv = Server(plugins=[otel.plugin()])

    async def refuse(*args: object, **kwargs: object) -> None:
        raise Unreachable("broker down")

    srv.broker.enqueue = refuse  # type: ignore[method-assign]
    async with srv:
        with pytest.raises(Exception, match="broker down"):
            await srv.enqueue(Job("any", b""))
    [send] = otel.sends()
    assert send.status.status_code is StatusCode.ERROR
    assert send.attributes["error.type"] == "tasqueue.errors.BrokerError"
    assert otel.total("tasqueue.jobs.enqueued") == 0
    assert send.kind is SpanKind.PRODUCER


@pytest.mark.asyncio
async def test_a_handler_returning_something_else_than_bytes_is_a_failed_run(server: Server, otel) -> None:
    @server.task("text")
    async def text(payload: bytes, ctx: JobCtx) -> bytes:
        return "not bytes"  # type: ignore[return-value]

    async with running(server):
        job_id = await server.enqueue(Job("text", b""))
        assert (await server.wait(job_id, timeout=10)).status == "failed"
    [run] = otel.runs(job_id)
    assert run.status.status_code is StatusCode.ERROR
    assert run.attributes["error.type"] == "TypeError"
    assert otel.total("tasqueue.jobs.failed", task="text", error="TypeError") == 1
    assert otel.total("tasqueue.jobs.succeeded", task="text") == 0


@pytest.mark.asyncio
async def test_without_an_sdk_the_incoming_context_still_passes_through() -> None:
    from opentelemetry.metrics import NoOpMeterProvider
    from opentelemetry.trace import NonRecordingSpan, NoOpTracerProvider, SpanContext, TraceFlags

    from tasqueue_otel import OtelPlugin

    upstream = SpanContext(0x1234, 0x5678, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    seen: list[SpanContext] = []
    plugin = OtelPlugin(tracer_provider=NoOpTracerProvider(), meter_provider=NoOpMeterProvider())
    async with Server(plugins=[plugin]) as srv:

        @srv.task("t")
        async def t(payload: bytes, ctx: JobCtx) -> None:
            seen.append(trace.get_current_span().get_span_context())

        async with running(srv):
            token = context.attach(trace.set_span_in_context(NonRecordingSpan(upstream)))
            try:
                job_id = await srv.enqueue(Job("t", b""))
            finally:
                context.detach(token)
            job = await srv.wait(job_id, timeout=10)
    assert job.headers["traceparent"] == f"00-{0x1234:032x}-{0x5678:016x}-01"
    [inside] = seen
    assert (inside.trace_id, inside.span_id) == (0x1234, 0x5678)


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_a_job_the_handler_enqueues_is_sent_from_inside_its_run(server: Server, otel, kind: str) -> None:
    @server.task("leaf")
    async def leaf(payload: bytes, ctx: JobCtx) -> None:
        return None

    if kind == "async":

        async def fan_out(payload: bytes, ctx: JobCtx) -> bytes:
            return (await server.enqueue(Job("leaf", b""))).encode()

    else:

        def fan_out(payload: bytes, ctx: JobCtx) -> bytes:  # a worker thread, through the blocking facade
            return server.sync.enqueue(Job("leaf", b"")).encode()

    server.register_task("fan_out", fan_out)
    async with running(server):
        parent = await server.enqueue(Job("fan_out", b""))
        await server.wait(parent, timeout=10)
        child = (await server.get_result(parent)).decode()
        await server.wait(child, timeout=10)

    [parent_run] = otel.runs(parent)
    [child_send] = otel.sends(child)
    [child_run] = otel.runs(child)
    assert parent_id(child_send) == parent_run.context.span_id
    assert parent_id(child_run) == child_send.context.span_id
    assert child_run.context.trace_id == parent_run.context.trace_id
