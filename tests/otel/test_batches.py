"""Enqueue middleware sees whole batches (``enqueue_many``, groups, follow-ups): each job of a batch
stored at once still gets its own send span and context. These tests call the middleware directly.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from opentelemetry.trace import StatusCode

from tasqueue import Job, JobMessage
from tasqueue_otel import OtelMiddleware


def messages(n: int) -> list[JobMessage]:
    return [JobMessage(id=f"job-{i}", queue="bulk", job=Job("t", b"x")) for i in range(n)]


@pytest.mark.asyncio
async def test_each_message_of_a_batch_gets_its_own_send_span_and_context(otel) -> None:
    mw = OtelMiddleware(tracer_provider=otel.tracer_provider, meter_provider=otel.meter_provider)
    stored: list[JobMessage] = []

    async def store(batch: Sequence[JobMessage]) -> list[str]:
        stored.extend(batch)
        return [m.id for m in batch]

    with otel.tracer.start_as_current_span("import orders") as request:
        ids = await mw.enqueue(messages(3), store)

    assert ids == ["job-0", "job-1", "job-2"]
    sends = otel.sends()
    assert [s.attributes["messaging.message.id"] for s in sends] == ids
    for span, message in zip(sends, stored, strict=True):
        assert span.name == "send bulk"
        assert span.parent.span_id == request.get_span_context().span_id
        assert message.headers["traceparent"].split("-")[1:3] == [f"{span.context.trace_id:032x}", f"{span.context.span_id:016x}"]
    assert otel.total("tasqueue.jobs.enqueued", queue="bulk", task="t") == 3


@pytest.mark.asyncio
async def test_a_failed_batch_marks_every_send_span(otel) -> None:
    mw = OtelMiddleware(tracer_provider=otel.tracer_provider, meter_provider=otel.meter_provider)

    async def refuse(batch: Sequence[JobMessage]) -> list[str]:
        raise ConnectionError("broker down")

    with pytest.raises(ConnectionError):
        await mw.enqueue(messages(2), refuse)
    sends = otel.sends()
    assert len(sends) == 2
    assert all(s.status.status_code is StatusCode.ERROR for s in sends)
    assert otel.total("tasqueue.jobs.enqueued") == 0
