"""``OtelMiddleware``: a PRODUCER span per enqueue, a CONSUMER span per run, trace context in between.

``enqueue`` opens a ``send <queue>`` span and injects its context (W3C ``traceparent``,
``tracestate``, ``baggage``; whatever the configured propagator writes) into
``JobMessage.headers``. ``process`` extracts it on the worker, wherever that runs, and opens
``process <queue>`` as its child, current while the handler runs, so the user's own spans nest
under it (sync handlers too: the worker copies contextvars into their thread). Attribute names
follow the OpenTelemetry messaging semantic conventions; what they do not cover is under
``tasqueue.``. The same two methods record the metrics.

A run that failed and will be retried, or that a shutdown cut short, writes its span context
into the message's headers (``tasqueue-prev-attempt``), and the next attempt links back to it:
attempts are siblings under the producer span, chained by links.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Final

import msgspec
from opentelemetry import context as otel_context
from opentelemetry import metrics, propagate, trace
from opentelemetry.context import Context
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.trace import INVALID_SPAN, Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from tasqueue.errors import JobTimeoutError
from tasqueue.middleware import Middleware

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.propagators.textmap import TextMapPropagator
    from opentelemetry.trace import Span, TracerProvider
    from opentelemetry.util.types import AttributeValue

    from tasqueue.messages import JobMessage
    from tasqueue.middleware import EnqueueNext, ProcessNext
    from tasqueue.tasks import JobCtx

__all__ = [
    "INSTRUMENTATION_NAME",
    "PREV_ATTEMPT_HEADER",
    "OtelMiddleware",
]

#: The instrumentation scope of the tracer and the meter.
INSTRUMENTATION_NAME: Final = "tasqueue"
#: The messaging semantic conventions these names follow.
SCHEMA_URL: Final = "https://opentelemetry.io/schemas/1.27.0"
#: Header carrying a failed attempt's span context (traceparent format) to the next attempt.
PREV_ATTEMPT_HEADER: Final = "tasqueue-prev-attempt"

# ---- attribute names (OpenTelemetry messaging conventions, then tasqueue's own) -------------
MESSAGING_SYSTEM: Final = "messaging.system"
DESTINATION: Final = "messaging.destination.name"
OPERATION_TYPE: Final = "messaging.operation.type"
OPERATION_NAME: Final = "messaging.operation.name"
MESSAGE_ID: Final = "messaging.message.id"
BODY_SIZE: Final = "messaging.message.body.size"
ERROR_TYPE: Final = "error.type"
TASK: Final = "tasqueue.task.name"
RETRY_COUNT: Final = "tasqueue.job.retry_count"
MAX_RETRIES: Final = "tasqueue.job.max_retries"
WILL_RETRY: Final = "tasqueue.job.will_retry"
OUTCOME: Final = "tasqueue.job.outcome"
TIMEOUT: Final = "tasqueue.job.timeout"
TIMED_OUT: Final = "tasqueue.job.timed_out"
STALLS: Final = "tasqueue.job.stalls"
RELEASED: Final = "tasqueue.job.released"
ETA: Final = "tasqueue.job.eta"
GROUP_ID: Final = "tasqueue.group.id"
CHAIN_ID: Final = "tasqueue.chain.id"
SCHEDULE_ID: Final = "tasqueue.schedule.id"
LINK_KIND: Final = "tasqueue.link.kind"

# Outcomes of one run, the values of ``tasqueue.job.outcome``.
SUCCESS: Final = "success"
RETRY: Final = "retry"  # failed; will run again after a backoff
FAILURE: Final = "failure"  # failed for good (retries spent)
INTERRUPTED: Final = "interrupted"  # cut short by shutdown or a lost lease; handed back, not counted as a retry

#: Histogram buckets in seconds: the messaging conventions' advice, stretched to an hour for long jobs.
DURATION_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
DURATION_BUCKETS_LONG: Final = (*DURATION_BUCKETS, 30.0, 60.0, 300.0, 900.0, 3600.0)

_EMPTY: Final = Context()
_MAX_CACHED = 256

# What an OtelMiddleware is handling (a job id, a batch's ids, a run's JobCtx), so that a second
# one installed on the same Server (given as middleware *and* loaded as a plugin) passes the same
# work through instead of doubling its spans, while a job enqueued from inside is still traced.
_in_enqueue: contextvars.ContextVar[object] = contextvars.ContextVar("tasqueue_otel_in_enqueue", default=None)
_in_process: contextvars.ContextVar[object] = contextvars.ContextVar("tasqueue_otel_in_process", default=None)
# The context of the run that just finished in this task, or None while none has. The worker
# enqueues a job's on_success / on_error follow-ups after ``process`` returned, in the task that
# ran it; their producer spans take the run's consumer span as parent from here. Set, never
# reset: the worker's task per run is discarded with its context.
_finished_run: contextvars.ContextVar[Context | None] = contextvars.ContextVar("tasqueue_otel_finished_run", default=None)


class OtelMiddleware(Middleware):
    """Traces and metrics for every enqueue and every run, with trace context across the queue.

    Args:
        tracer_provider: Where spans go; the global provider when ``None`` (a proxy that
            follows ``trace.set_tracer_provider`` even if that is called later).
        meter_provider: Where metrics go; the global provider when ``None``.
        propagator: How context is written into and read from ``JobMessage.headers``; the
            global propagator (W3C trace context and baggage by default) when ``None``.

    Usually installed by the ``tasqueue-otel`` plugin rather than by hand; see ``OtelPlugin``.
    """

    def __init__(
        self,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        propagator: TextMapPropagator | None = None,
    ) -> None:
        from tasqueue_otel import __version__

        self._tracer = trace.get_tracer(INSTRUMENTATION_NAME, __version__, tracer_provider, schema_url=SCHEMA_URL)
        meter = metrics.get_meter(INSTRUMENTATION_NAME, __version__, meter_provider, schema_url=SCHEMA_URL)
        # Work handed to a no-op provider is wasted: skip it. An explicit no-op provider stays one;
        # a global proxy is asked on each call until an SDK provider is set, then never again.
        self._traced: bool | None = _live(self._tracer, trace.NoOpTracer, _proxy_tracer_live)
        self._metered: bool | None = _live(meter, metrics.NoOpMeter, _proxy_meter_live)
        self._meter = meter
        self._propagator = propagator
        self._enqueued = meter.create_counter("tasqueue.jobs.enqueued", "{job}", "Jobs enqueued (stored and published).")
        self._succeeded = meter.create_counter("tasqueue.jobs.succeeded", "{job}", "Runs whose handler returned.")
        self._failed = meter.create_counter("tasqueue.jobs.failed", "{job}", "Runs that failed with no retry left.")
        self._retried = meter.create_counter("tasqueue.jobs.retried", "{job}", "Runs that failed and will be retried.")
        # Observed at collection time from a plain count, rather than two SDK measurements per run.
        meter.create_observable_up_down_counter(
            "tasqueue.jobs.active", [self._observe_active], "{job}", "Runs whose handler is running now."
        )
        self._duration = meter.create_histogram(
            "tasqueue.job.duration",
            "s",
            "How long one run of a handler took, its timeout included.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS_LONG,
        )
        self._wait = meter.create_histogram(
            "tasqueue.job.wait.duration",
            "s",
            "How long a job waited in its queue: from enqueue (or its eta) to the start of its first run.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS_LONG,
        )
        self._labels: dict[tuple[str, str], _Labels] = {}

    # ---- enqueue: the producer side ----------------------------------------------------------

    async def enqueue(self, messages: Sequence[JobMessage], call_next: EnqueueNext) -> list[str]:
        """Open one ``send <queue>`` (PRODUCER) span per message and inject its context into the message's headers."""
        ids = tuple(m.id for m in messages)
        if _in_enqueue.get() == ids:
            return await call_next(messages)
        guard = _in_enqueue.set(ids)
        try:
            parent = self._send_parent()
            opened = [self._open_send(m, parent) for m in messages]
            # For a single job, spans of the broker's own client library nest under its send span.
            single = opened[0] if len(opened) == 1 else None
            token = otel_context.attach(single[1]) if single is not None and single[0].is_recording() else None
            try:
                done = await call_next([m for _, _, m in opened])
            except BaseException as exc:
                for span, _, _ in opened:
                    _close_failed_send(span, exc)
                raise
            finally:
                if token is not None:
                    otel_context.detach(token)
                for span, _, _ in opened:
                    span.end()
            if self._metered or self._metering():
                counts: dict[tuple[str, str], int] = {}
                for m in messages:
                    key = (m.queue, m.job.task)
                    counts[key] = counts.get(key, 0) + 1
                for (queue, task), n in counts.items():
                    self._enqueued.add(n, self._labels_of(queue, task).base)
            return done
        finally:
            _in_enqueue.reset(guard)

    def _send_parent(self) -> Context:
        parent = _finished_run.get()
        return otel_context.get_current() if parent is None else parent

    def _open_send(self, message: JobMessage, parent: Context) -> tuple[Span, Context, JobMessage]:
        """Start the PRODUCER span of ``message``; return it, its context, and the message carrying that context."""
        span = (
            self._tracer.start_span(
                "send " + message.queue,
                context=parent,
                kind=SpanKind.PRODUCER,
                attributes=_message_attributes(message, "send"),
            )
            if self._traced or self._tracing()
            else INVALID_SPAN
        )
        # Without a span of ours (no SDK) still pass on what came in: baggage, a remote parent.
        current = trace.set_span_in_context(span, parent) if span.get_span_context().is_valid else parent
        if current:  # an empty Context has nothing to inject
            headers = dict(message.headers)
            (self._propagator or propagate.get_global_textmap()).inject(headers, context=current)
            if headers != message.headers:
                message = msgspec.structs.replace(message, headers=headers)
        return span, current, message

    # ---- process: the consumer side ----------------------------------------------------------

    async def process(self, ctx: JobCtx, call_next: ProcessNext) -> bytes | None:
        """Open ``process <queue>`` (CONSUMER) as the child of the enqueuing span, around the handler."""
        if _in_process.get() is ctx:
            return await call_next(ctx)
        meta = ctx.meta
        headers = meta.headers
        parent = (self._propagator or propagate.get_global_textmap()).extract(headers, context=_EMPTY) if headers else _EMPTY
        if self._traced or self._tracing():
            span = self._tracer.start_span(
                "process " + meta.queue,
                context=parent,
                kind=SpanKind.CONSUMER,
                attributes=_message_attributes(meta, "process"),
                links=_previous_attempt(headers) if headers else None,
            )
            current = trace.set_span_in_context(span, parent) if span.get_span_context().is_valid else parent
        else:
            span, current = INVALID_SPAN, parent
        labels: _Labels | None = None
        if self._metered or self._metering():
            labels = self._labels_of(meta.queue, meta.job.task)
            self._record_wait(meta, labels)
            labels.active += 1
        guard = _in_process.set(ctx)
        _finished_run.set(None)
        # The handler sees the job's context, not the worker's: its spans nest under the run.
        token = otel_context.attach(current)
        outcome = SUCCESS
        error: BaseException | None = None
        start = time.perf_counter()
        try:
            returned = await call_next(ctx)
            checked: object = returned  # typed bytes | None, but a handler may return anything
            if checked is not None and not isinstance(checked, bytes):
                # The worker fails such a run right after this returns; say so on the span too.
                problem = f"the handler of task {meta.job.task!r} returned {type(checked).__name__}; return bytes or None"
                error = TypeError(problem)
                outcome = _failed_outcome(ctx, error)
            return returned
        except asyncio.CancelledError:
            outcome = INTERRUPTED
            raise
        except Exception as exc:
            error = exc
            outcome = _failed_outcome(ctx, exc)
            raise
        finally:
            elapsed = time.perf_counter() - start
            otel_context.detach(token)
            _in_process.reset(guard)
            _finished_run.set(current)
            error_type = None if error is None else _error_type(error)
            if span.is_recording():
                self._finish_span(span, meta, outcome, error, error_type)
            else:
                span.end()
            if labels is not None:
                self._count(labels, outcome, error_type, elapsed)

    def _tracing(self) -> bool:
        if self._traced is not None:
            return self._traced
        if _proxy_tracer_live(self._tracer):
            self._traced = True  # a global provider is set once per process, for good
            return True
        return False

    def _metering(self) -> bool:
        if self._metered is not None:
            return self._metered
        if _proxy_meter_live(self._meter):
            self._metered = True
            return True
        return False

    def _finish_span(
        self, span: Span, meta: JobMessage, outcome: str, error: BaseException | None, error_type: str | None
    ) -> None:
        if outcome == INTERRUPTED:
            span.add_event("tasqueue.job.interrupted", {OUTCOME: INTERRUPTED})
            # A shutdown hands back this very headers dict in the message it requeues.
            meta.headers[PREV_ATTEMPT_HEADER] = _traceparent(span.get_span_context())
        elif error is not None and error_type is not None:
            _record_error(span, error, error_type)
            if isinstance(error, JobTimeoutError):
                span.set_attribute(TIMED_OUT, True)
            span.set_attribute(WILL_RETRY, outcome == RETRY)
            if outcome == RETRY:
                span.add_event("tasqueue.job.retry", {RETRY_COUNT: meta.retried + 1, MAX_RETRIES: meta.max_retry})
                # The worker hands back this very headers dict in the message of the retry.
                meta.headers[PREV_ATTEMPT_HEADER] = _traceparent(span.get_span_context())
        span.set_attribute(OUTCOME, outcome)
        span.end()

    def _count(self, labels: _Labels, outcome: str, error_type: str | None, elapsed: float) -> None:
        labels.active -= 1
        if outcome == SUCCESS:
            self._succeeded.add(1, labels.base)
        elif outcome == RETRY:
            self._retried.add(1, labels.with_error(error_type or ""))
        elif outcome == FAILURE:
            self._failed.add(1, labels.with_error(error_type or ""))
        self._duration.record(elapsed, labels.outcomes[outcome])

    def _record_wait(self, meta: JobMessage, labels: _Labels) -> None:
        # Only a first delivery of a first attempt: later ones include earlier runs and backoffs.
        if meta.retried or meta.released or meta.stalls or meta.processed_at is None or meta.enqueued_at is None:
            return
        ready = meta.enqueued_at
        eta = meta.job.opts.eta
        if eta is not None and eta > ready:
            ready = eta
        # Clocks of producer and worker machines may disagree a little; never report a negative wait.
        self._wait.record(max((meta.processed_at - ready).total_seconds(), 0.0), labels.base)

    def _observe_active(self, options: CallbackOptions) -> Iterable[Observation]:
        # Runs on the metric reader's thread: copy the values in one step (atomic under the GIL).
        return [Observation(labels.active, labels.base) for labels in list(self._labels.values())]

    def _labels_of(self, queue: str, task: str) -> _Labels:
        key = (queue, task)
        labels = self._labels.get(key)
        if labels is None:
            labels = _Labels(queue, task)
            if len(self._labels) < _MAX_CACHED:  # a handful in any real deployment; capped anyway
                self._labels[key] = labels
        return labels


class _Labels:
    """The metric attributes of one (queue, task), built once instead of once per job."""

    __slots__ = ("_errors", "active", "base", "outcomes")

    def __init__(self, queue: str, task: str) -> None:
        self.active = 0  # runs in flight; reported only for the (queue, task) pairs cached
        self.base: dict[str, AttributeValue] = {DESTINATION: queue, TASK: task}
        self.outcomes = {o: {**self.base, OUTCOME: o} for o in (SUCCESS, RETRY, FAILURE, INTERRUPTED)}
        self._errors: dict[str, dict[str, AttributeValue]] = {}

    def with_error(self, error_type: str) -> dict[str, AttributeValue]:
        attrs = self._errors.get(error_type)
        if attrs is None:
            attrs = {**self.base, ERROR_TYPE: error_type}
            if len(self._errors) < _MAX_CACHED:
                self._errors[error_type] = attrs
        return attrs


def _proxy_tracer_live(tracer: object) -> bool:
    # ProxyTracer resolves its real tracer in the `_tracer` property, a NoOpTracer until then.
    return not isinstance(getattr(tracer, "_tracer", None), trace.NoOpTracer)


def _proxy_meter_live(meter: object) -> bool:
    # _ProxyMeter holds its real meter in `_real_meter`, None until a provider is set.
    return getattr(meter, "_real_meter", None) is not None


def _live(provided: object, noop: type, proxy_live: Callable[[object], bool]) -> bool | None:
    """True: always record; False: never (an explicit no-op); None: a global proxy, ask it each time.

    The proxies' private attributes are read defensively: an API version without them is
    treated as live, which costs time but loses nothing.
    """
    if isinstance(provided, noop):
        return False
    cls = type(provided)
    if cls.__name__ == "ProxyTracer" and isinstance(getattr(cls, "_tracer", None), property):
        return True if proxy_live(provided) else None
    if cls.__name__ == "_ProxyMeter" and hasattr(provided, "_real_meter"):
        return True if proxy_live(provided) else None
    return True


def _message_attributes(message: JobMessage, operation: str) -> dict[str, AttributeValue]:
    job = message.job
    attrs: dict[str, AttributeValue] = {
        MESSAGING_SYSTEM: "tasqueue",
        DESTINATION: message.queue,
        OPERATION_TYPE: operation,
        OPERATION_NAME: operation,
        MESSAGE_ID: message.id,
        BODY_SIZE: len(job.payload),
        TASK: job.task,
    }
    if operation == "process":  # a send is always of a new job
        attrs[RETRY_COUNT] = message.retried
    opts = job.opts
    if message.max_retry:
        attrs[MAX_RETRIES] = message.max_retry
    if opts.timeout is not None:
        attrs[TIMEOUT] = opts.timeout if isinstance(opts.timeout, float) else opts.timeout.total_seconds()
    if opts.eta is not None:
        attrs[ETA] = opts.eta.isoformat()
    if message.group_id:
        attrs[GROUP_ID] = message.group_id
    if message.chain_id:
        attrs[CHAIN_ID] = message.chain_id
    if message.schedule_id:
        attrs[SCHEDULE_ID] = message.schedule_id
    if message.stalls:
        attrs[STALLS] = message.stalls
    if message.released:
        attrs[RELEASED] = message.released
    return attrs


def _failed_outcome(ctx: JobCtx, exc: BaseException) -> str:
    """What the worker makes of a run that raised ``exc`` (mirrors ``_worker.Worker._run``)."""
    if ctx.cancelled and not isinstance(exc, JobTimeoutError):
        # Shutdown or a lost lease cancelled it: the job is handed back (or left to the new
        # lease holder) without counting a retry.
        return INTERRUPTED
    meta = ctx.meta
    return RETRY if meta.retried < meta.max_retry else FAILURE


def _error_type(exc: BaseException) -> str:
    cls = type(exc)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def _close_failed_send(span: Span, exc: BaseException) -> None:
    if isinstance(exc, Exception) and span.is_recording():
        _record_error(span, exc, _error_type(exc))


def _record_error(span: Span, exc: BaseException, error_type: str) -> None:
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
    span.set_attribute(ERROR_TYPE, error_type)


def _traceparent(sc: SpanContext) -> str:
    return f"00-{sc.trace_id:032x}-{sc.span_id:016x}-{sc.trace_flags:02x}"


def _previous_attempt(headers: dict[str, str]) -> Sequence[Link] | None:
    value = headers.get(PREV_ATTEMPT_HEADER)
    if not value:
        return None
    parts = value.split("-")
    if len(parts) != 4:
        return None
    try:
        sc = SpanContext(int(parts[1], 16), int(parts[2], 16), is_remote=True, trace_flags=TraceFlags(int(parts[3], 16)))
    except ValueError:
        return None
    return [Link(sc, {LINK_KIND: "previous_attempt"})] if sc.is_valid else None
