"""One job, from the bytes a worker fetched to the outcome it hands the settler.

``Runner.run`` decodes the delivery, checks a redelivery against the job's record (finished
already? crashing its workers?), passes on jobs for tasks this worker lacks, records
``processing``, runs the callbacks and, inside the ``process`` middleware, the handler with its
timeout, and turns what happened into an ``Outcome``. It never writes or settles itself: the
``Settler`` does, fenced by the outcome's status write.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import logging
from collections.abc import Awaitable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol, cast

import msgspec

from tasqueue import _policies
from tasqueue._clock import Clock
from tasqueue._codec import DecodeErrors, decode_job, encode
from tasqueue._keys import PHASE_DONE, PHASE_HANDED_BACK, PHASE_RUNNING, job_key, result_key, schedule_key, status_version
from tasqueue._options import Options
from tasqueue._presence import Presence, traceback_writes
from tasqueue._publisher import Publisher
from tasqueue._settler import Outcome, Settler
from tasqueue.broker import Delivery
from tasqueue.errors import JobTimeoutError, PayloadError, UnknownTaskError
from tasqueue.jobs import DEFAULT_QUEUE, Job
from tasqueue.messages import JobMessage, JobStatus
from tasqueue.middleware import EnqueueNext, Middleware, compose_enqueue, compose_process
from tasqueue.results import Results, Write
from tasqueue.tasks import AsyncHandler, JobCtx, RegisteredTask, RunState, SyncHandler, call_maybe_async

replace = msgspec.structs.replace

#: The task name of the record a worker stores for bytes it could not decode.
UNDECODABLE_TASK = "tasqueue:undecodable"

_FINAL = frozenset({JobStatus.SUCCESSFUL, JobStatus.FAILED})


class Run(RunState):
    """One job in flight: its delivery, where it stands, and why it may have been cancelled.

    Being a ``RunState``, it is also what the handler's ``JobCtx`` reads (``cancelled``, ``saved``).
    """

    __slots__ = ("delivery", "finishing", "lost", "queue", "record", "released", "settling", "thread")

    def __init__(self, queue: str, delivery: Delivery) -> None:
        self.cancelled = False  # RunState's, set here: one call less per job
        self.saved: bytes | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.queue = queue
        self.delivery = delivery
        self.record: JobMessage | None = None  # the job as recorded "processing" by this run
        self.lost = False  # the broker gave the lease away: leave the job to whoever has it
        self.released = False  # shutdown cut it short: hand it back, never mark it successful
        self.finishing = False  # the handler is done: its outcome is decided, callbacks may run
        self.settling = False  # only waiting for its follow-ups to be published
        self.thread: concurrent.futures.Future[bytes | None] | None = None  # a sync handler's run


class Slots(Protocol):
    """What a run asks of the worker that holds its slot."""

    def handed_over(self, run: Run) -> None:
        """The handler is done and the run only waits for its follow-ups: free its slot."""

    async def alone(self, run: Run) -> None:
        """Wait until no other job of this worker is in flight, and keep it so while ``run`` runs."""


_current: contextvars.ContextVar[Run] = contextvars.ContextVar("tasqueue_run")


class Runner:
    """Runs jobs for a worker; see the module docstring."""

    def __init__(
        self,
        *,
        tasks: Mapping[str, RegisteredTask],
        results: Results,
        publisher: Publisher,
        settler: Settler,
        enqueue: EnqueueNext,
        middleware: Sequence[Middleware],
        options: Options,
        slots: Slots,
        presence: Presence,
        executor: ThreadPoolExecutor | None,
        clock: Clock,
        log: logging.Logger,
    ) -> None:
        self.tasks = tasks
        self.results = results
        self.publisher = publisher
        self.settler = settler
        self.options = options
        self.log = log
        self._enqueue = enqueue  # new jobs (a schedule's next run), through the enqueue middleware
        self._middleware = middleware
        self._process = compose_process(middleware, self._call_handler)
        self._slots = slots
        self._presence = presence
        self._executor = executor
        self._clock = clock
        self._unknown = _policies.UnknownTasks(log, options.unknown_task_timeout)

    async def run(self, run: Run) -> None:
        d = run.delivery
        try:
            msg = decode_job(d.data)
        except DecodeErrors as exc:
            self._bury(run, exc)
            return
        try:
            task = self.tasks.get(msg.job.task)
            if task is None or d.deliveries > 1 or msg.schedule_id or run.queue == DEFAULT_QUEUE != task.opts.queue:
                task = await self._admit(run, msg)
                if task is None:
                    return
            if msg.job.opts.max_retries is None and task.opts.max_retries is not None:
                msg = replace(msg, max_retry=task.opts.max_retries)  # the producer did not know the task's default
            processing = replace(msg, status=JobStatus.PROCESSING, processed_at=self._clock.now(), stalls=d.deliveries - 1)
            self.settler.write(Write(job_key(msg.id), encode(processing), version=_version(processing, d, PHASE_RUNNING)))
            run.record = processing
            # ---- the handler, inside the process middleware ----
            ctx = JobCtx(processing, self.results, result_key(msg.id), run)
            opts = task.opts
            if not task.is_async or processing.job.opts.timeout or opts.timeout:
                _current.set(run)  # for the innermost step, under the middleware: the thread, the timeout
            try:
                if opts.processing_cb is not None:
                    await self._callback(run, opts.processing_cb, ctx)
                returned = await self._process(ctx)
                value: object = returned  # checked at run time: handlers are not always type-checked
                if value is not None and not isinstance(value, bytes):
                    problem = f"the handler of task {processing.job.task!r} returned {type(value).__name__}; return bytes or None"
                    raise TypeError(problem)
            except asyncio.CancelledError:
                if run.lost:
                    return  # the job belongs to whoever holds its lease now
                raise
            except Exception as exc:
                run.finishing = True
                if run.released:
                    self._hand_back(run, processing)
                elif not run.lost:
                    await self._failed(run, ctx, task, exc)
                return
            run.finishing = True
            if run.released:
                # The handler swallowed the shutdown's cancellation and returned: it was cut
                # short, so it must not count as a success.
                self._hand_back(run, processing)
            elif not run.lost:
                await self._succeeded(run, ctx, task, returned)
        except asyncio.CancelledError:
            if run.released and not run.finishing:
                self._hand_back(run, msg)
                return
            raise

    async def _admit(self, run: Run, msg: JobMessage) -> RegisteredTask | None:
        """The checks a job needs before it runs, beyond the common case; ``None`` if it was settled here."""
        if run.delivery.deliveries > 1 and not await self._may_run_again(run, msg):
            return None
        task = self.tasks.get(msg.job.task)
        if task is None:
            await self._unknown_task(run, msg)
            return None
        if run.queue == DEFAULT_QUEUE != task.opts.queue:
            await self._forward(run, msg, task.opts.queue)
            return None
        if msg.schedule_id and msg.retried == 0 and not await self._schedule_next(run, msg):
            return None
        return task

    async def _may_run_again(self, run: Run, msg: JobMessage) -> bool:
        """For a redelivery: False if it is settled here (finished already, or parked)."""
        d = run.delivery
        stored, result = await self.results.get_many([job_key(msg.id), result_key(msg.id)])
        earlier = _decode(stored)
        if earlier is not None and earlier.status in _FINAL:
            await self._finished_before(run, earlier, result)
            return False
        charged = _policies.stalls_charged(d.deliveries)
        if charged > self.options.max_stalls:
            err = (
                f"WorkerLostError: its workers died or lost its lease {d.deliveries - 1} times running this job, "
                f"{charged} of them while it ran alone; parked as failed"
            )
            await self._fail(run, msg, err)
            return False
        if _policies.runs_alone(d.deliveries):
            # Workers died running this job, perhaps because of jobs beside it: run it alone,
            # so that a death now is its own (see _policies).
            await self._slots.alone(run)
        return True

    # ---- the handler ---------------------------------------------------------------------

    async def _call_handler(self, ctx: JobCtx) -> bytes | None:
        """The innermost step of processing: the handler itself, with the job's timeout."""
        task = self.tasks[ctx.meta.job.task]
        payload = ctx.meta.job.payload
        timeout = ctx.meta.job.opts.timeout or task.opts.timeout
        call: Awaitable[bytes | None]
        if task.is_async:
            if timeout is None:
                return await cast(AsyncHandler, task.handler)(payload, ctx)
            call = cast(AsyncHandler, task.handler)(payload, ctx)
        else:
            assert self._executor is not None
            run = _current.get()
            run.loop = asyncio.get_running_loop()
            # Carry contextvars (trace context, for one) into the thread. The worker holds the
            # run's slot until the thread ends, so a free thread always waits for the next run.
            handler = cast(SyncHandler, task.handler)
            run.thread = self._executor.submit(contextvars.copy_context().run, handler, payload, ctx)
            call = asyncio.wrap_future(run.thread)
            if timeout is None:
                return await call
        assert isinstance(timeout, float)
        return await _within(call, timeout, _current.get())

    # ---- outcomes ------------------------------------------------------------------------

    async def _succeeded(self, run: Run, ctx: JobCtx, task: RegisteredTask, returned: bytes | None) -> None:
        msg, d = ctx.meta, run.delivery
        writes: list[Write] = []
        if returned is not None:
            writes.append(Write(result_key(msg.id), returned))
            run.saved = returned  # what success_cb and the on_success jobs see as this run's result
        if task.opts.success_cb is not None:
            await self._callback(run, task.opts.success_cb, ctx)
        follow = self.publisher.follow_ups(msg, "on_success", run.saved) if msg.job.on_success else []
        final = replace(msg, status=JobStatus.SUCCESSFUL, on_success_ids=[m.id for m in follow], prev_err="")
        status = Write(job_key(msg.id), encode(final), version=_version(msg, d, PHASE_DONE), success=msg.id)
        writes.append(status)
        outcome = Outcome(run.queue, d, writes, status=status, record=msg, done_version=status.version or 0)
        if follow:
            await self._conclude(run, outcome, follow)
        else:
            self.settler.settle(outcome)

    async def _failed(self, run: Run, ctx: JobCtx, task: RegisteredTask, exc: Exception) -> None:
        msg, d = ctx.meta, run.delivery
        err = f"{type(exc).__name__}: {exc}"
        if msg.retried >= msg.max_retry or isinstance(exc, PayloadError):  # its bytes will not change
            await self._fail(run, msg, err, exc=exc, task=task, ctx=ctx)
            return
        self.log.info("job %s (%s) failed, will retry (%d/%d): %s", msg.id, msg.job.task, msg.retried + 1, msg.max_retry, err)
        if task.opts.retrying_cb is not None:
            await self._callback(run, task.opts.retrying_cb, ctx, exc)
        data = encode(replace(msg, status=JobStatus.RETRYING, prev_err=err, retried=msg.retried + 1))
        backoff = msg.job.opts.backoff or task.opts.backoff or self.options.backoff
        status = Write(job_key(msg.id), data, version=_version(msg, d, PHASE_HANDED_BACK))
        delay = backoff.delay(msg.retried)
        self.settler.settle(
            Outcome(
                run.queue,
                d,
                [status, *traceback_writes(msg.id, exc)],
                status=status,
                record=msg,
                done_version=_version(msg, d, PHASE_DONE),
                nack=True,
                data=data,
                delay=delay,
            )
        )
        self._presence.retrying(run.queue, msg.id, delay)

    async def _fail(
        self,
        run: Run,
        msg: JobMessage,
        err: str,
        *,
        exc: Exception | None = None,
        task: RegisteredTask | None = None,
        ctx: JobCtx | None = None,
    ) -> None:
        """Fail a job for good: ``failed_cb``, status ``failed`` on the failed list, ``on_error`` jobs, ack."""
        self.log.warning("job %s (%s) failed: %s", msg.id, msg.job.task, err)
        run.finishing = True
        if task is not None and task.opts.failed_cb is not None and ctx is not None and exc is not None:
            await self._callback(run, task.opts.failed_cb, ctx, exc)
        follow = self.publisher.follow_ups(msg, "on_error", None) if msg.job.on_error else []
        version = _version(msg, run.delivery, PHASE_DONE)
        final = encode(replace(msg, status=JobStatus.FAILED, prev_err=err))
        status = Write(job_key(msg.id), final, version=version, failed=msg.id)
        writes = [status, *traceback_writes(msg.id, exc)]
        outcome = Outcome(run.queue, run.delivery, writes, status=status, record=msg, done_version=version)
        await self._conclude(run, outcome, follow)

    async def _conclude(self, run: Run, outcome: Outcome, follow: list[JobMessage]) -> None:
        """Hand the outcome to the settler, with its follow-ups through the enqueue middleware.

        The middleware runs here, in the job's own task (where a tracing middleware finds the
        run's context); its innermost step queues the messages with the outcome, and the
        settler publishes them only once the outcome's status write happened.
        """
        if not follow:
            self.settler.settle(outcome)
            return
        self._slots.handed_over(run)
        queued = False

        async def publish_after_status(messages: Sequence[JobMessage]) -> list[str]:
            nonlocal queued
            queued = True
            return await self.settler.settle_then_publish(outcome, messages)

        try:
            await compose_enqueue(self._middleware, publish_after_status)(follow)
        except Exception:
            if queued:
                return  # the settler has the outcome; it gives the job back to publish them later
            delay = self.options.backoff.delay(0)
            self.log.exception(
                "the enqueue middleware failed on the follow-up jobs of %s; trying again in %.1fs", run.delivery.id, delay
            )
            outcome.nack, outcome.delay = True, delay
            self.settler.settle(outcome)
            return
        if not queued:  # the middleware dropped them
            self.settler.settle(outcome)

    def _hand_back(self, run: Run, msg: JobMessage) -> None:
        """Give a job cut short by shutdown back to the broker, without counting a retry."""
        d = run.delivery
        if run.record is None:
            # Not started: the same bytes go back, which counts as no delivery at all.
            self.settler.settle(Outcome(run.queue, d, nack=True, data=d.data))
            return
        data = encode(replace(run.record, status=JobStatus.QUEUED, released=run.record.released + 1))
        status = Write(job_key(msg.id), data, version=_version(run.record, d, PHASE_HANDED_BACK))
        note = f"handed job {msg.id} ({msg.job.task}) back unfinished"
        self.settler.settle(Outcome(run.queue, d, [status], status=status, nack=True, data=data, note=note))

    # ---- other paths ---------------------------------------------------------------------

    async def _finished_before(self, run: Run, earlier: JobMessage, result: bytes | None) -> None:
        """A redelivery of a finished job: send its follow-ups again (they are idempotent), then ack."""
        self.log.info("job %s was redelivered but had already finished (%s); acking it", earlier.id, earlier.status)
        run.finishing = True
        if earlier.status is JobStatus.SUCCESSFUL:
            follow = self.publisher.follow_ups(earlier, "on_success", result) if earlier.job.on_success else []
        else:
            follow = self.publisher.follow_ups(earlier, "on_error", None) if earlier.job.on_error else []
        await self._conclude(run, Outcome(run.queue, run.delivery), follow)

    async def _unknown_task(self, run: Run, msg: JobMessage) -> None:
        """Pass a job this worker has no handler for on to other workers; fail it after a while.

        Workers of one queue need not all know the same tasks (a rolling deploy, specialised
        workers), so one worker's ignorance is not the end of the job.
        """
        d = run.delivery
        delay = _policies.unknown_task_delay(msg, self._clock.now(), self.options.unknown_task_timeout, self.options.backoff)
        if delay is not None:
            # The same bytes go back as new data, so that passing a job on does not count as
            # its worker dying.
            self._unknown.passed_on(msg, delay)
            self.settler.settle(Outcome(run.queue, d, nack=True, data=d.data, delay=delay))
            return
        known = ", ".join(sorted(self.tasks))
        unknown = UnknownTaskError(
            f"no worker took task {msg.job.task!r} within {self.options.unknown_task_timeout:g}s (this one has: {known})"
        )
        await self._fail(run, msg, f"UnknownTaskError: {unknown}")

    async def _forward(self, run: Run, msg: JobMessage, queue: str) -> None:
        """Move a job from the default queue to the queue its task is registered on."""
        d = run.delivery
        try:
            await self.publisher.publish([(queue, msg.id, encode(replace(msg, queue=queue)), 0.0)])
        except Exception as exc:
            delay = self.options.backoff.delay(0)
            self.log.warning("could not move job %s to queue %r (%s); trying again in %.1fs", msg.id, queue, exc, delay)
            self.settler.settle(Outcome(run.queue, d, nack=True, data=d.data, delay=delay))
            return
        self.log.info("job %s (%s) was on the default queue; moved it to its task's queue %r", msg.id, msg.job.task, queue)
        self.settler.settle(Outcome(run.queue, d))

    async def _schedule_next(self, run: Run, msg: JobMessage) -> bool:
        """Enqueue a recurring job's next run before this one starts; False if it was cancelled."""
        active = (await self.results.get_many([schedule_key(msg.schedule_id)]))[0]
        if active is None:
            self.log.info("schedule %s was cancelled; dropping its run %s", msg.schedule_id, msg.id)
            await self.results.delete([job_key(msg.id)])
            self.settler.settle(Outcome(run.queue, run.delivery))
            return False
        # Enqueued before running, so a failing or crashing run never ends the schedule.
        await self._enqueue([self.publisher.next_run(msg)])
        return True

    def _bury(self, run: Run, exc: BaseException) -> None:
        """Keep undecodable bytes where an operator finds them: a failed job under the delivery's id."""
        d = run.delivery
        self.log.error(
            "queue %r delivered undecodable message %r (%d bytes): %s; stored as a failed job", run.queue, d.id, len(d.data), exc
        )
        record = JobMessage(
            id=d.id,
            status=JobStatus.FAILED,
            queue=run.queue,
            prev_err=f"UndecodableMessage: {exc}",
            processed_at=self._clock.now(),
            job=Job(UNDECODABLE_TASK, d.data),
        )
        status = Write(job_key(d.id), encode(record), failed=d.id)
        self.settler.settle(Outcome(run.queue, d, [status], status=status))

    async def _callback(self, run: Run, fn: object, *args: object) -> None:
        try:
            await call_maybe_async(fn, *args)  # type: ignore[arg-type]
        except asyncio.CancelledError:
            if not run.finishing:
                raise
            # The handler is done and its outcome decided: a shutdown that gave up waiting cuts
            # the callback short, never the outcome.
            self.log.warning("callback %r was cut short by shutdown; the job's outcome is recorded all the same", fn)
        except Exception:
            self.log.exception("callback %r raised; the job's outcome is unchanged", fn)


async def _within(call: Awaitable[bytes | None], timeout: float, run: Run) -> bytes | None:
    """Await ``call`` for at most ``timeout`` seconds; then cancel it and raise ``JobTimeoutError``.

    ``ctx.cancelled`` is true before the handler sees the cancellation, and a handler that
    swallows it and returns still fails: its run was cut short.
    """
    task = asyncio.current_task()
    assert task is not None
    before = task.cancelling()
    expired = False

    def expire() -> None:
        nonlocal expired
        expired = True
        run.cancelled = True
        task.cancel()

    timer = asyncio.get_running_loop().call_later(timeout, expire)
    problem = f"the handler ran longer than its timeout of {timeout:g}s and was cancelled"
    try:
        returned = await call
    except asyncio.CancelledError:
        if expired and task.uncancel() <= before:
            raise JobTimeoutError(problem) from None
        raise
    finally:
        timer.cancel()
    if expired:
        task.uncancel()
        raise JobTimeoutError(problem)
    return returned


def _version(msg: JobMessage, d: Delivery, phase: int) -> int:
    return status_version(msg.retried, msg.released, d.deliveries, phase)


def _decode(raw: bytes | None) -> JobMessage | None:
    if raw is None:
        return None
    try:
        return decode_job(raw)
    except DecodeErrors:
        return None
