"""Fixtures for tasqueue-otel: SDK providers that keep spans and metrics in memory, and a Server using them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_asyncio
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tasqueue import Server
from tasqueue_otel import OtelPlugin


@dataclass
class Otel:
    """A TracerProvider and a MeterProvider that keep everything in memory, with ways to look."""

    exporter: InMemorySpanExporter = field(default_factory=InMemorySpanExporter)
    reader: InMemoryMetricReader = field(default_factory=InMemoryMetricReader)

    def __post_init__(self) -> None:
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.tracer = self.tracer_provider.get_tracer("tests")

    def plugin(self) -> OtelPlugin:
        return OtelPlugin(tracer_provider=self.tracer_provider, meter_provider=self.meter_provider)

    def spans(self, name: str | None = None, *, kind: trace.SpanKind | None = None) -> list[ReadableSpan]:
        """Finished spans, oldest first, optionally only those with a name / kind."""
        return [
            s for s in self.exporter.get_finished_spans() if (name is None or s.name == name) and (kind is None or s.kind == kind)
        ]

    def sends(self, job_id: str | None = None) -> list[ReadableSpan]:
        return [s for s in self.spans(kind=trace.SpanKind.PRODUCER) if job_id is None or _id(s) == job_id]

    def runs(self, job_id: str | None = None) -> list[ReadableSpan]:
        return [s for s in self.spans(kind=trace.SpanKind.CONSUMER) if job_id is None or _id(s) == job_id]

    def points(self, metric: str) -> list[Any]:
        """The data points of one metric (cumulative), across every scope."""
        data = self.reader.get_metrics_data()
        found: list[Any] = []
        if data is None:
            return found
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    if m.name == metric:
                        found.extend(m.data.data_points)
        return found

    def total(self, metric: str, **attrs: str) -> float:
        """The sum of a counter's points (or the count of a histogram's) whose attributes include ``attrs``."""
        total = 0.0
        for p in self.points(metric):
            if all(p.attributes.get(_attr(k)) == v for k, v in attrs.items()):
                total += p.count if hasattr(p, "count") else p.value
        return total

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


_ATTR = {
    "queue": "messaging.destination.name",
    "task": "tasqueue.task.name",
    "outcome": "tasqueue.job.outcome",
    "error": "error.type",
}


def _attr(key: str) -> str:
    return _ATTR.get(key, key)


def _id(span: ReadableSpan) -> str | None:
    return None if span.attributes is None else span.attributes.get("messaging.message.id")  # type: ignore[return-value]


@pytest.fixture
def otel() -> Iterator[Otel]:
    o = Otel()
    yield o
    o.shutdown()


@pytest_asyncio.fixture
async def server(otel: Otel) -> AsyncIterator[Server]:
    """A memory:// Server with an explicit OtelPlugin (the installed entry point is loaded too and must yield)."""
    srv = Server(plugins=[otel.plugin()], shutdown_timeout=5.0)
    yield srv
    await srv.close()
