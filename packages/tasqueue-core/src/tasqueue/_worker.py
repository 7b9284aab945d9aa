"""The consumer half of a Server: fetch, run, record, settle.

One fetch loop per queue leases up to as many jobs as the queue has free slots, plus a small
prefetch sized to what finishes during one fetch, and starts a task per job (``Worker._run``).
A run's outcome is never written inline: it goes to ``_Settler``, which batches the writes of
every job finished meanwhile into one ``set_many`` and then acks (or gives back) their
deliveries. So the results store always sees an outcome before the broker forgets the job,
the hot path costs two round trips per batch rather than per job, and a handler's slot is
free for the next job while the previous outcome is written. The follow-up jobs of every job
finishing meanwhile (``on_success``/``on_error``, the next job of a chain) are published in
the same batch, before the outcomes of their parents are written. A heartbeat renews the
leases of everything in flight, so a long job is never taken by another worker while this
one lives.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import signal
from collections import deque
from collections.abc import Awaitable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, cast

import msgspec

from tasqueue._codec import DecodeErrors, decode_job, encode
from tasqueue._keys import (
    PHASE_DONE,
    PHASE_HANDED_BACK,
    PHASE_RUNNING,
    job_key,
    result_key,
    schedule_key,
    status_version,
)
from tasqueue._presence import Presence, traceback_writes
from tasqueue.broker import Delivery
from tasqueue.errors import JobTimeoutError, PayloadError, UnknownTaskError
from tasqueue.jobs import Job
from tasqueue.messages import JobMessage, JobStatus
from tasqueue.middleware import compose_enqueue, compose_process
from tasqueue.results import Write
from tasqueue.tasks import AsyncHandler, JobCtx, SyncHandler, call_maybe_async

if TYPE_CHECKING:
    from tasqueue.server import RegisteredTask, Server

replace = msgspec.structs.replace

#: The task name of the record a worker stores for bytes it could not decode.
UNDECODABLE_TASK = "tasqueue:undecodable"

_RETRY_MIN, _RETRY_MAX = 0.05, 5.0
_RATE_WINDOW = 0.1  # seconds over which a queue's completion rate is measured, for the prefetch


class _Run:
    """One job in flight: its delivery and why its task may be cancelled."""

    __slots__ = ("ctx", "delivery", "lost", "queue", "released", "settling")

    def __init__(self, queue: str, delivery: Delivery) -> None:
        self.queue = queue
        self.delivery = delivery
        self.ctx: JobCtx | None = None
        self.lost = False  # the broker gave the lease away: leave the job to whoever has it
        self.released = False  # shutdown cut it short: hand it back, never mark it successful
        self.settling = False  # the handler is done; its follow-ups are being published


class _Outcome:
    """How one delivery ends: ack it, or give it back with new data after a delay."""

    __slots__ = ("data", "delay", "delivery", "nack", "queue")

    def __init__(self, queue: str, delivery: Delivery, nack: bool = False, data: bytes | None = None, delay: float = 0.0) -> None:
        self.queue = queue
        self.delivery = delivery
        self.nack = nack
        self.data = data
        self.delay = delay


class _Settler:
    """Group commit: write the outcomes of many jobs in one batch, then settle their deliveries."""

    def __init__(self, worker: Worker) -> None:
        self._worker = worker
        self._writes: dict[str, Write] = {}
        self._success: list[str] = []
        self._failed: list[str] = []
        self._outcomes: list[_Outcome] = []
        self._in_flight: list[_Outcome] = []
        self._follow_ups: list[tuple[Sequence[JobMessage], asyncio.Future[list[str]]]] = []
        self._wakeup = asyncio.Event()
        self._closing = False
        self.pending: dict[str, int] = {}

    def write(self, write: Write) -> None:
        """Queue a write; within one batch only the newest version of a key is sent."""
        current = self._writes.get(write.key)
        if current is not None and write.version is not None and current.version is not None and current.version > write.version:
            return
        # Re-insert so that keys keep the order of their last write.
        self._writes.pop(write.key, None)
        self._writes[write.key] = write
        self._wakeup.set()

    def settle(self, outcome: _Outcome, writes: Sequence[Write] = (), *, success: str = "", failed: str = "") -> None:
        """Queue an outcome: its writes go first, then the delivery is acked or given back."""
        for w in writes:
            self.write(w)
        if success:
            self._success.append(success)
        if failed:
            self._failed.append(failed)
        self._outcomes.append(outcome)
        self.pending[outcome.queue] = self.pending.get(outcome.queue, 0) + 1
        self._wakeup.set()

    def enqueue(self, messages: Sequence[JobMessage]) -> asyncio.Future[list[str]]:
        """Queue follow-up jobs to publish with the next batch; the future gets their ids."""
        done: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()
        self._follow_ups.append((messages, done))
        self._wakeup.set()
        return done

    def deliveries(self) -> list[tuple[str, Delivery]]:
        """Deliveries whose outcome is not settled yet: their leases still need renewing."""
        return [(o.queue, o.delivery) for o in (*self._outcomes, *self._in_flight)]

    async def run(self) -> None:
        """Flush whenever something is queued; after ``close()``, until nothing is left."""
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            await self.flush()
            if self._closing and not (self._writes or self._outcomes or self._follow_ups):
                return

    def close(self) -> None:
        self._closing = True
        self._wakeup.set()

    async def flush(self) -> None:
        """Publish follow-ups, write everything queued so far, then settle; retries writes until they succeed."""
        if self._follow_ups:
            await self._publish_follow_ups()
        if not (self._writes or self._success or self._failed or self._outcomes):
            return
        writes, success, failed = list(self._writes.values()), self._success, self._failed
        outcomes = self._in_flight = self._outcomes
        self._writes, self._success, self._failed, self._outcomes = {}, [], [], []
        worker = self._worker
        delay = _RETRY_MIN
        while True:
            try:
                await worker.results.set_many(writes, success=success, failed=failed)
                break
            except Exception:
                # Retrying is safe: versioned writes and list adds are idempotent. Until it
                # works the jobs stay leased (the heartbeat renews them) and fetching pauses.
                worker.log.exception("could not write the outcome of %d job(s); retrying in %.2fs", len(outcomes), delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX)
        if success or failed:
            worker.presence.finished({o.delivery.id: o.queue for o in outcomes}, success, failed)
        acks: dict[str, list[Delivery]] = {}
        for o in outcomes:
            if not o.nack:
                acks.setdefault(o.queue, []).append(o.delivery)
        try:
            for queue, deliveries in acks.items():
                await worker.broker.ack(queue, deliveries)
            for o in outcomes:
                if o.nack:
                    await worker.broker.nack(o.queue, o.delivery, data=o.data, delay=o.delay)
        except Exception:
            # The outcome is stored; a job left unsettled comes back after its lease and is
            # recognised as finished (Worker._finished_before) instead of being run again.
            worker.log.exception("could not settle %d delivery(ies) with the broker", len(outcomes))
        finally:
            self._in_flight = []
            for o in outcomes:
                self.pending[o.queue] -= 1
                worker.slot_freed(o.queue)

    async def _publish_follow_ups(self) -> None:
        batch, self._follow_ups = self._follow_ups, []
        messages = [m for part, _ in batch for m in part]
        try:
            await self._worker.server._store_and_publish(messages)
        except Exception as exc:
            # Each parent is given back to run again later (follow-up ids are stable).
            for _, done in batch:
                if not done.done():
                    done.set_exception(exc)
        else:
            for part, done in batch:
                if not done.done():
                    done.set_result([m.id for m in part])


class Worker:
    """Consumes every queue that has a registered task, until stopped."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.broker = server.broker
        self.results = server.results
        self.tasks: dict[str, RegisteredTask] = server.tasks
        self.log = server._logger or logging.getLogger("tasqueue.worker")
        self.loop: asyncio.AbstractEventLoop | None = None
        self._process = compose_process(server.middleware, self._call_handler)
        self._settler = _Settler(self)
        # Follow-ups pass the same enqueue middleware, but are stored and published by the settler.
        self._enqueue_follow = compose_enqueue(server.middleware, self._settler.enqueue)
        self._runs: dict[asyncio.Task[None], _Run] = {}
        self._running: dict[str, int] = dict.fromkeys(server.queues, 0)
        self._settling: dict[str, int] = dict.fromkeys(server.queues, 0)  # runs waiting for their follow-ups
        # Leased deliveries waiting for a slot (the prefetch), and jobs finished per queue.
        self._buffered: dict[str, deque[Delivery]] = {q: deque() for q in server.queues}
        self._completed: dict[str, int] = dict.fromkeys(server.queues, 0)
        self._slot_events: dict[str, asyncio.Event] = {q: asyncio.Event() for q in server.queues}
        self._stop_requested = asyncio.Event()
        self._stopped = asyncio.Event()
        self.presence = Presence(self)
        self._hard_stop = False
        sync_queues = {t.opts.queue for t in self.tasks.values() if not t.is_async}
        sync_slots = sum(server.queues[q].concurrency for q in sync_queues)
        self._executor = ThreadPoolExecutor(sync_slots, thread_name_prefix="tasqueue-sync") if sync_slots else None

    # ---- lifecycle -----------------------------------------------------------------------

    async def run(self) -> None:
        self.loop = asyncio.get_running_loop()
        settler = asyncio.create_task(self._settler.run(), name="tasqueue-settler")
        heartbeat = asyncio.create_task(self._heartbeat(), name="tasqueue-heartbeat")
        presence = asyncio.create_task(self.presence.run(), name="tasqueue-presence")
        consumers = [
            asyncio.create_task(self._consume(queue, cfg.concurrency), name=f"tasqueue-consume:{queue}")
            for queue, cfg in self.server.queues.items()
        ]
        self.log.info(
            "worker started: queues %s, tasks %s",
            {q: c.concurrency for q, c in self.server.queues.items()},
            sorted(self.tasks),
        )
        try:
            await self._stop_requested.wait()
        finally:
            # Cancelled from outside (or stopped): shut down gracefully either way.
            presence.cancel()
            await asyncio.shield(self._shutdown(consumers, heartbeat, settler))

    async def stop(self) -> None:
        self._stop_requested.set()
        await self._stopped.wait()

    def signal(self, sig: signal.Signals) -> None:
        if self._stop_requested.is_set():
            self.log.warning("second %s: handing running jobs back now", sig.name)
            self._hard_stop = True
            self._release_all()
        else:
            self.log.info("%s: finishing running jobs (up to %ss), then stopping", sig.name, self.server.shutdown_timeout)
        self._stop_requested.set()

    async def _shutdown(
        self, consumers: list[asyncio.Task[None]], heartbeat: asyncio.Task[None], settler: asyncio.Task[None]
    ) -> None:
        try:
            for task in consumers:
                task.cancel()
            await asyncio.gather(*consumers, return_exceptions=True)
            await self._hand_back_buffered()
            running = list(self._runs)
            if running and not self._hard_stop:
                _, pending = await asyncio.wait(running, timeout=self.server.shutdown_timeout)
                if pending:
                    self.log.warning("shutdown: handing %d unfinished job(s) back to the broker", len(pending))
            self._release_all()
            if self._runs:
                # Handing back takes a write and a nack each; give it a bounded time, then leave
                # those jobs to come back when their leases run out.
                _, stuck = await asyncio.wait(list(self._runs), timeout=max(self.server.shutdown_timeout, 5.0))
                for task in stuck:
                    task.cancel()
                await asyncio.gather(*stuck, return_exceptions=True)
            # The outcomes of finished jobs are written while the heartbeat still renews their leases.
            self._settler.close()
            _, stuck = await asyncio.wait([settler], timeout=max(self.server.shutdown_timeout, 5.0))
            if stuck:
                self.log.error("shutdown: could not write the outcome of finished jobs; they will be redelivered")
                settler.cancel()
                await asyncio.gather(settler, return_exceptions=True)
            heartbeat.cancel()
            await asyncio.gather(heartbeat, return_exceptions=True)
            await self.presence.leave()
        finally:
            if self._executor is not None:
                # Threads cannot be interrupted; one still running finishes in the background.
                self._executor.shutdown(wait=False, cancel_futures=True)
            self._stopped.set()
            self.log.info("worker stopped")

    async def _hand_back_buffered(self) -> None:
        """Give prefetched deliveries that never started back to the broker, for other workers."""
        for queue, buffer in self._buffered.items():
            while buffer:
                d = buffer.pop()  # newest first: each goes to the front, so the oldest ends up first
                try:
                    # The same bytes as new data: a delivery that never ran is no worker death.
                    await self.broker.nack(queue, d, data=d.data)
                except Exception:
                    self.log.exception("could not hand back prefetched job %s; it returns when its lease runs out", d.id)

    def _release_all(self) -> None:
        for task, run in self._runs.items():
            # A settling run only waits for its follow-ups, which the settler publishes on the way out.
            if not run.released and not run.settling:
                run.released = True
                if run.ctx is not None:
                    run.ctx._cancel()
                task.cancel()

    # ---- fetching ------------------------------------------------------------------------

    def slot_freed(self, queue: str) -> None:
        self._slot_events[queue].set()

    async def _consume(self, queue: str, concurrency: int) -> None:
        freed = self._slot_events[queue]
        # Finished jobs whose outcome is still being written hold no handler slot; cap them so a
        # slow or unreachable results store pauses fetching instead of piling up work.
        settle_limit = max(concurrency * 4, 256)
        pending = self._settler.pending
        buffer = self._buffered[queue]
        loop = asyncio.get_running_loop()
        # Prefetch: how many jobs to lease beyond the free slots, so that the slots do not sit idle
        # while a fetch travels. It is the work that finishes during one fetch (completion rate x
        # fetch time, doubled for slack), so short jobs get a buffer and long ones none: a worker
        # busy with long jobs does not hoard what idle workers could run.
        rate = fetch_time = 0.0
        last, done_then = loop.time(), 0
        delay = _RETRY_MIN
        while True:
            if self.presence.paused:
                await self.presence.gate(queue)
            # Below one job per fetch the slots hardly idle (an in-process broker, or slow jobs),
            # and a small buffer would only fragment the fetches.
            during = rate * fetch_time
            prefetch = min(concurrency, int(2 * during)) if during >= 1 else 0
            want = concurrency + prefetch - self._running[queue] - len(buffer)
            if want <= 0 or pending.get(queue, 0) + self._settling[queue] >= settle_limit:
                freed.clear()
                await freed.wait()
                continue
            started = loop.time()
            try:
                deliveries = await self.broker.fetch(queue, want, timeout=self.server.fetch_timeout)
            except Exception:
                self.log.exception("fetching from queue %r failed; retrying in %.2fs", queue, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX)
                continue
            delay = _RETRY_MIN
            now = loop.time()
            if len(deliveries) == want:  # work was waiting: this fetch took one round trip, not a wait
                fetch_time = 0.8 * fetch_time + 0.2 * (now - started)
            completed = self._completed[queue]
            if now - last >= _RATE_WINDOW:  # short windows would mistake a burst for a rate
                rate = 0.5 * rate + 0.5 * (completed - done_then) / (now - last)
                last, done_then = now, completed
            idle = self._running[queue] == 0
            buffer.extend(deliveries)
            self._dispatch(queue, concurrency)
            if idle and deliveries:
                # An idle worker lets the jobs it just started reach their handlers before it
                # prepares the next fetch (a busy one fetches first, to keep its slots fed).
                await asyncio.sleep(0)

    def _dispatch(self, queue: str, concurrency: int) -> None:
        """Start buffered deliveries while the queue has free slots."""
        buffer = self._buffered[queue]
        while buffer and self._running[queue] < concurrency:
            run = _Run(queue, buffer.popleft())
            self._running[queue] += 1
            task = asyncio.create_task(self._run(run))
            self._runs[task] = run
            task.add_done_callback(self._done)

    def _free_slot(self, queue: str) -> None:
        """A handler finished: count it, start a prefetched job in its slot, wake the fetch loop."""
        self._running[queue] -= 1
        self._completed[queue] += 1
        if self._buffered[queue] and not self._stop_requested.is_set():
            self._dispatch(queue, self.server.queues[queue].concurrency)
        self._slot_events[queue].set()

    def _done(self, task: asyncio.Task[None]) -> None:
        run = self._runs.pop(task)
        if run.settling:
            self._settling[run.queue] -= 1
            self._slot_events[run.queue].set()
        else:
            self._free_slot(run.queue)
        if not task.cancelled() and task.exception() is not None:
            self.log.error("internal error handling job %s", run.delivery.id, exc_info=task.exception())

    async def _heartbeat(self) -> None:
        interval = self.broker.visibility_timeout / 3
        while True:
            await asyncio.sleep(interval)
            by_queue: dict[str, list[Delivery]] = {}
            for run in self._runs.values():
                by_queue.setdefault(run.queue, []).append(run.delivery)
            for queue, delivery in self._settler.deliveries():
                by_queue.setdefault(queue, []).append(delivery)
            for queue, buffer in self._buffered.items():
                by_queue.setdefault(queue, []).extend(buffer)
            for queue, deliveries in by_queue.items():
                try:
                    lost = await self.broker.extend(queue, deliveries)
                except Exception:
                    self.log.exception("could not renew %d lease(s) on queue %r", len(deliveries), queue)
                    continue
                if lost:
                    self._lost(lost)

    def _lost(self, lost: list[Delivery]) -> None:
        gone = {id(d) for d in lost}
        for buffer in self._buffered.values():
            kept = [d for d in buffer if id(d) not in gone]
            if len(kept) != len(buffer):
                buffer.clear()
                buffer.extend(kept)
        for task, run in self._runs.items():
            if id(run.delivery) in gone and not run.settling:
                self.log.warning("lost the lease on job %s (another worker may run it); cancelling this run", run.delivery.id)
                run.lost = True
                if run.ctx is not None:
                    run.ctx._cancel()
                task.cancel()

    # ---- one job -------------------------------------------------------------------------

    async def _run(self, run: _Run) -> None:
        d = run.delivery
        try:
            msg = decode_job(d.data)
        except DecodeErrors as exc:
            self._bury(run, exc)
            return
        if d.deliveries > 1:
            if await self._finished_before(run, msg):
                return
            if d.deliveries - 1 > self.server.max_stalls:
                err = (
                    f"WorkerLostError: a worker died or lost its lease {d.deliveries - 1} times "
                    "running this job; parked as failed"
                )
                await self._fail(run, msg, err, None, None)
                return
        task = self.tasks.get(msg.job.task)
        if task is None:
            await self._unknown_task(run, msg)
            return
        if msg.schedule_id and msg.retried == 0 and not await self._schedule_next(run, msg):
            return
        if msg.job.opts.max_retries is None and task.opts.max_retries is not None:
            msg = replace(msg, max_retry=task.opts.max_retries)  # the producer did not know the task's default

        processing = replace(msg, status=JobStatus.PROCESSING, processed_at=self.server.clock.now(), stalls=d.deliveries - 1)
        self._settler.write(Write(job_key(msg.id), encode(processing), version=self._version(processing, d, PHASE_RUNNING)))
        ctx = run.ctx = JobCtx(processing, self.results, result_key(msg.id))
        opts = task.opts
        try:
            if opts.processing_cb is not None:
                await self._callback(opts.processing_cb, ctx)
            returned = await self._process(ctx)
            value: object = returned  # checked at run time: handlers are not always type-checked
            if value is not None and not isinstance(value, bytes):
                problem = f"the handler of task {msg.job.task!r} returned {type(value).__name__}; return bytes or None"
                raise TypeError(problem)
        except asyncio.CancelledError:
            if run.lost:
                return  # the job belongs to whoever holds its lease now
            if run.released:
                await self._release(run, processing)
                return
            raise
        except Exception as exc:
            if run.released:
                await self._release(run, processing)
            elif not run.lost:
                await self._failed(run, processing, task, exc)
            return
        if run.released:
            # The handler swallowed the shutdown's cancellation and returned: it was cut
            # short, so it must not count as a success.
            await self._release(run, processing)
            return
        await self._succeeded(run, processing, task, returned)

    async def _call_handler(self, ctx: JobCtx) -> bytes | None:
        """The innermost step of processing: the handler itself, with the job's timeout."""
        task = self.tasks[ctx.meta.job.task]
        timeout = ctx.meta.job.opts.timeout or task.opts.timeout
        payload = ctx.meta.job.payload
        call: Awaitable[bytes | None]
        if task.is_async:
            call = cast(AsyncHandler, task.handler)(payload, ctx)
        else:
            assert self._executor is not None
            loop = asyncio.get_running_loop()
            ctx._attach(loop)
            # Carry contextvars (trace context, for one) into the thread.
            handler = cast(SyncHandler, task.handler)
            call = loop.run_in_executor(self._executor, contextvars.copy_context().run, handler, payload, ctx)
        if timeout is None:
            return await call
        assert isinstance(timeout, float)
        try:
            async with asyncio.timeout(timeout) as cm:
                return await call
        except TimeoutError as exc:
            if not cm.expired():
                raise  # the handler's own TimeoutError, not ours
            ctx._cancel()
            problem = f"the handler ran longer than its timeout of {timeout:g}s and was cancelled"
            raise JobTimeoutError(problem) from exc

    @staticmethod
    def _version(msg: JobMessage, d: Delivery, phase: int) -> int:
        return status_version(msg.retried, msg.released, d.deliveries, phase)

    async def _succeeded(self, run: _Run, msg: JobMessage, task: RegisteredTask, returned: bytes | None) -> None:
        d = run.delivery
        ctx = cast(JobCtx, run.ctx)
        writes: list[Write] = []
        if returned is not None:
            writes.append(Write(result_key(msg.id), returned))
            ctx._saved = returned  # what success_cb and the on_success jobs see as this run's result
        if task.opts.success_cb is not None:
            await self._callback(task.opts.success_cb, ctx)
        children: list[str] = []
        if msg.job.on_success:
            follow = self.server._follow_ups(msg, msg.job.on_success, "on_success", ctx.saved)
            if not await self._enqueue_follow_ups(run, msg, follow):
                return
            children = [m.id for m in follow]
        final = replace(msg, status=JobStatus.SUCCESSFUL, on_success_ids=children, prev_err="")
        writes.append(Write(job_key(msg.id), encode(final), version=self._version(msg, d, PHASE_DONE)))
        self._settler.settle(_Outcome(run.queue, d), writes, success=msg.id)

    async def _failed(self, run: _Run, msg: JobMessage, task: RegisteredTask, exc: Exception) -> None:
        if msg.retried >= msg.max_retry or isinstance(exc, PayloadError):
            await self._fail(run, msg, f"{type(exc).__name__}: {exc}", exc, task)
            return
        err = f"{type(exc).__name__}: {exc}"
        self.log.info("job %s (%s) failed, will retry (%d/%d): %s", msg.id, msg.job.task, msg.retried + 1, msg.max_retry, err)
        if task.opts.retrying_cb is not None:
            await self._callback(task.opts.retrying_cb, run.ctx, exc)
        retrying = replace(msg, status=JobStatus.RETRYING, prev_err=err, retried=msg.retried + 1)
        data = encode(retrying)
        backoff = msg.job.opts.backoff or task.opts.backoff or self.server.backoff
        outcome = _Outcome(run.queue, run.delivery, nack=True, data=data, delay=backoff.delay(msg.retried))
        write = Write(job_key(msg.id), data, version=self._version(msg, run.delivery, PHASE_HANDED_BACK))
        self._settler.settle(outcome, [write, *traceback_writes(msg.id, exc)])
        self.presence.retrying(run.queue, msg.id, outcome.delay)

    async def _fail(self, run: _Run, msg: JobMessage, err: str, exc: Exception | None, task: RegisteredTask | None) -> None:
        """Fail a job for good: ``failed_cb``, ``on_error`` jobs, status ``failed``, failed list, ack."""
        self.log.warning("job %s (%s) failed: %s", msg.id, msg.job.task, err)
        if task is not None and task.opts.failed_cb is not None and run.ctx is not None and exc is not None:
            await self._callback(task.opts.failed_cb, run.ctx, exc)
        if msg.job.on_error:
            follow = self.server._follow_ups(msg, msg.job.on_error, "on_error", None)
            if not await self._enqueue_follow_ups(run, msg, follow):
                return
        final = replace(msg, status=JobStatus.FAILED, prev_err=err)
        write = Write(job_key(msg.id), encode(final), version=self._version(msg, run.delivery, PHASE_DONE))
        self._settler.settle(_Outcome(run.queue, run.delivery), [write, *traceback_writes(msg.id, exc)], failed=msg.id)

    async def _enqueue_follow_ups(self, run: _Run, msg: JobMessage, follow: list[JobMessage]) -> bool:
        # The handler is done: its slot goes to the next job while the follow-ups are published.
        run.settling = True
        self._settling[run.queue] += 1
        self._free_slot(run.queue)
        try:
            await self._enqueue_follow(follow)
        except Exception:
            # The outcome cannot be recorded without its follow-ups: give the job back to be
            # run again later. Follow-up ids are stable, so none is enqueued twice.
            delay = self.server.backoff.delay(0)
            self.log.exception("could not enqueue the follow-up jobs of %s; it will run again in %.1fs", msg.id, delay)
            self._settler.settle(_Outcome(run.queue, run.delivery, nack=True, delay=delay))
            return False
        return True

    async def _release(self, run: _Run, msg: JobMessage) -> None:
        """Hand a job cut short by shutdown back to the broker, without counting a retry."""
        released = replace(msg, status=JobStatus.QUEUED, released=msg.released + 1)
        data = encode(released)
        try:
            await self.results.set(job_key(msg.id), data, version=self._version(msg, run.delivery, PHASE_HANDED_BACK))
            await self.broker.nack(run.queue, run.delivery, data=data)
        except Exception:
            self.log.exception("could not hand job %s back; it will be redelivered when its lease runs out", msg.id)
        else:
            self.log.info("handed job %s (%s) back unfinished", msg.id, msg.job.task)

    async def _unknown_task(self, run: _Run, msg: JobMessage) -> None:
        """Pass a job this worker has no handler for on to other workers; fail it after a few tries.

        Workers of one queue need not all know the same tasks (a rolling deploy, specialised
        workers), so one worker's ignorance is not the end of the job.
        """
        d = run.delivery
        now = self.server.clock.now()
        due = max(filter(None, (msg.enqueued_at, msg.job.opts.eta)), default=now)
        waited = (now - due).total_seconds()
        left = self.server.unknown_task_timeout - waited
        if left > 0:
            # Passes grow sparser the longer nobody takes the job. The same bytes go back as new
            # data, so that passing a job on does not count as its worker dying.
            backoff = self.server.backoff
            delay = min(max(backoff.delay(0), waited / 4), backoff.max, left)
            self.log.warning(
                "no handler for task %r (job %s) on this worker; passing it on to another worker in %.2fs",
                msg.job.task,
                msg.id,
                delay,
            )
            self._settler.settle(_Outcome(run.queue, d, nack=True, data=d.data, delay=delay))
            return
        known = ", ".join(sorted(self.tasks))
        unknown = UnknownTaskError(
            f"no worker took task {msg.job.task!r} within {self.server.unknown_task_timeout:g}s (this one has: {known})"
        )
        await self._fail(run, msg, f"UnknownTaskError: {unknown}", unknown, None)

    async def _finished_before(self, run: _Run, msg: JobMessage) -> bool:
        """For a redelivery: if an earlier delivery already finished the job, just ack it."""
        stored = (await self.results.get_many([job_key(msg.id)]))[0]
        if stored is None:
            return False
        try:
            status = decode_job(stored).status
        except DecodeErrors:
            return False
        if status not in (JobStatus.SUCCESSFUL, JobStatus.FAILED):
            return False
        self.log.info("job %s was redelivered but had already finished (%s); acking it", msg.id, status)
        self._settler.settle(_Outcome(run.queue, run.delivery))
        return True

    async def _schedule_next(self, run: _Run, msg: JobMessage) -> bool:
        """Enqueue a recurring job's next run before this one starts; False if it was cancelled."""
        active = (await self.results.get_many([schedule_key(msg.schedule_id)]))[0]
        if active is None:
            self.log.info("schedule %s was cancelled; dropping its run %s", msg.schedule_id, msg.id)
            await self.results.delete([job_key(msg.id)])
            self._settler.settle(_Outcome(run.queue, run.delivery))
            return False
        # Enqueued before running, so a failing or crashing run never ends the schedule.
        await self.server._enqueue_messages([self.server._next_run(msg)])
        return True

    def _bury(self, run: _Run, exc: BaseException) -> None:
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
            processed_at=self.server.clock.now(),
            job=Job(UNDECODABLE_TASK, d.data),
        )
        self._settler.settle(_Outcome(run.queue, d), [Write(job_key(d.id), encode(record))], failed=d.id)

    async def _callback(self, fn: object, *args: object) -> None:
        try:
            await call_maybe_async(fn, *args)  # type: ignore[arg-type]
        except Exception:
            self.log.exception("callback %r raised; the job's outcome is unchanged", fn)
