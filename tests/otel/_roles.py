"""The two processes of the cross-process trace test: ``python _roles.py producer|worker URL SPANS QUEUE``.

Each configures its own SDK TracerProvider exporting spans as JSON lines to the file SPANS (the
SDK's ConsoleSpanExporter pointed at a file), the way two services on two machines would each
export to their own collector. They share nothing but Redis.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import TextIO

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

from tasqueue import Job, JobCtx, JobOpts, Server
from tasqueue_otel import OtelPlugin


def provider(service: str, out: TextIO) -> TracerProvider:
    tp = TracerProvider(resource=Resource.create({"service.name": service}))
    tp.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(out=out, formatter=lambda s: s.to_json(indent=None) + "\n")))
    return tp


async def producer(url: str, out: TextIO, queue: str) -> None:
    tp = provider("shop-api", out)
    tracer = tp.get_tracer("shop-api")
    async with Server(url, url, plugins=[OtelPlugin(tracer_provider=tp)]) as srv:
        with tracer.start_as_current_span("POST /orders") as request:
            job_id = await srv.enqueue(Job("charge", b'{"order": 42}', JobOpts(queue=queue)))
        print(json.dumps({"job_id": job_id, "trace_id": f"0x{request.get_span_context().trace_id:032x}"}), flush=True)
    tp.shutdown()


async def worker(url: str, out: TextIO, queue: str) -> None:
    tp = provider("billing-worker", out)
    tracer = tp.get_tracer("billing-worker")
    ran: asyncio.Queue[str] = asyncio.Queue()
    srv = Server(url, url, plugins=[OtelPlugin(tracer_provider=tp)], fetch_timeout=0.5)

    @srv.task("charge", queue=queue, concurrency=1)
    async def charge(payload: bytes, ctx: JobCtx) -> bytes:
        with tracer.start_as_current_span("charge card"):
            await asyncio.sleep(0)
        ran.put_nowait(ctx.meta.id)
        return b"charged"

    async with srv:
        running = asyncio.create_task(srv.start(handle_signals=False))
        job_id = await ran.get()
        await srv.wait(job_id, timeout=30)
        await srv.stop()
        await running
    tp.shutdown()


if __name__ == "__main__":
    role, url, spans, queue = sys.argv[1:5]
    with open(spans, "a", encoding="utf-8") as out:
        asyncio.run((producer if role == "producer" else worker)(url, out, queue))
