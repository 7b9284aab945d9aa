"""The producer's path, shared by ``Server.enqueue`` and the worker: message → record → broker.

``Publisher`` builds a new job's message (its id, its queue, a recurring job's first fire time),
the messages jobs create (follow-ups, a schedule's next run, all with derived ids), and stores
and publishes them. It knows nothing of middleware: callers wrap ``store_and_publish`` in their
``enqueue`` middleware.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Coroutine, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

import msgspec

from tasqueue import _schedule
from tasqueue._clock import Clock
from tasqueue._codec import decode_job
from tasqueue._codec import encode as encode_message
from tasqueue._keys import derived_id, job_key, new_id, schedule_key
from tasqueue._presence import note_schedules
from tasqueue.broker import Broker, Envelope, FusedEnqueue
from tasqueue.errors import BrokerError, EnqueueError, TasqueueError
from tasqueue.jobs import DEFAULT_QUEUE, Job
from tasqueue.messages import JobMessage, JobStatus
from tasqueue.results import Results, Write
from tasqueue.tasks import RegisteredTask

replace = msgspec.structs.replace

#: Most jobs one fused enqueue call carries (see tasqueue.broker): each call is one step.
_FUSED_BATCH = 500


class Producer(Protocol):
    """What a ``Publisher`` works with, read at each use (a test harness swaps them): a ``Server``."""

    @property
    def broker(self) -> Broker: ...
    @property
    def results(self) -> Results: ...
    @property
    def clock(self) -> Clock: ...
    @property
    def log(self) -> logging.Logger: ...
    @property
    def tasks(self) -> Mapping[str, RegisteredTask]: ...


class Publisher:
    """Builds, stores and publishes job messages for ``app``.

    A job left on the default queue goes to its task's queue when ``app`` registered the task,
    and a job without ``max_retries`` takes its task's.
    """

    def __init__(self, app: Producer) -> None:
        self._app = app
        self._fusing: tuple[object, object, FusedEnqueue | None] = (None, None, None)

    def _fused(self) -> FusedEnqueue | None:
        """The broker's fused enqueue for the results store (an optional capability, see ``tasqueue.broker``)."""
        broker, results = self._app.broker, self._app.results
        if self._fusing[0] is not broker or self._fusing[1] is not results:
            fuse = getattr(broker, "fused_enqueue", None)
            self._fusing = (broker, results, fuse(results) if callable(fuse) else None)
        return self._fusing[2]

    # ---- messages ------------------------------------------------------------------------

    def message(
        self,
        job: Job,
        *,
        id: str | None = None,
        group_id: str = "",
        chain_id: str = "",
        prev_job_result: bytes | None = None,
        schedule_id: str = "",
    ) -> JobMessage:
        """The message a new job starts life as.

        ``id`` (a follow-up's or a cron run's derived id) is also written into the job's options,
        so that ``job.opts.id is None`` exactly when tasqueue made the id up. A job on the
        default queue whose task is registered on another queue goes to that queue.
        """
        opts = job.opts
        task = self._app.tasks.get(job.task)
        if task is not None and opts.queue == DEFAULT_QUEUE != task.opts.queue:
            opts = replace(opts, queue=task.opts.queue)
        if id is not None and opts.id != id:
            opts = replace(opts, id=id)
        if opts is not job.opts:
            job = replace(job, opts=opts)
        job_id = opts.id or new_id()
        now = self._app.clock.now()
        if opts.schedule and not schedule_id:
            # A new schedule: its first run comes at the first fire time (not before any eta).
            schedule_id = job_id
            first = _schedule.next_fire(opts.schedule, max(now, opts.eta or now))
            job = replace(job, opts=replace(opts, eta=first))
        return JobMessage(
            id=job_id,
            queue=opts.queue,
            schedule=opts.schedule,
            max_retry=opts.max_retries if opts.max_retries is not None else (task and task.opts.max_retries) or 0,
            prev_job_result=prev_job_result,
            enqueued_at=now,
            schedule_id=schedule_id,
            group_id=group_id,
            chain_id=chain_id,
            job=job,
        )

    def follow_ups(self, parent: JobMessage, kind: str, result: bytes | None) -> list[JobMessage]:
        """The messages of a finished job's ``on_success`` / ``on_error`` jobs, with stable ids."""
        jobs = parent.job.on_success if kind == "on_success" else parent.job.on_error
        return [
            self.message(
                job,
                id=job.opts.id or derived_id(parent.id, kind, n),
                chain_id=parent.chain_id if n == 0 and kind == "on_success" else "",
                prev_job_result=result,
            )
            for n, job in enumerate(jobs)
        ]

    def next_run(self, run: JobMessage) -> JobMessage:
        """The message of a schedule's run after ``run``; the same one however often it is asked for."""
        now = self._app.clock.now()
        fired = run.job.opts.eta or now
        at = _schedule.next_fire(run.schedule, max(now, fired))
        job = replace(run.job, opts=replace(run.job.opts, eta=at))
        return self.message(job, id=derived_id(run.schedule_id, "run", at.isoformat()), schedule_id=run.schedule_id)

    # ---- storing and publishing ----------------------------------------------------------

    async def store_and_publish(self, messages: Sequence[JobMessage]) -> list[str]:
        """Store each message as ``queued`` and publish it; return the ids.

        Ids that tasqueue generated cannot be stored already, so their records and their publish
        go out at once: in one step where the broker can fuse them with the results store (see
        ``tasqueue.broker``), else side by side (one round trip of waiting, not two). An id given by the caller, or
        derived (follow-ups, cron runs), is an idempotency key: it is stored first, and an id
        already stored is not published again (see ``_store_then_publish``). An id given twice
        in one call is one job: the first.

        If publishing fails, the records just written are deleted again, so no ``queued`` job
        is left behind that no broker holds; if it fails part-way, only the records of jobs
        surely not published go, and the ``EnqueueError`` says which ids were published.
        """
        if not messages:
            return []
        ids = [m.id for m in messages]
        if len(ids) > 1 and len(set(ids)) < len(ids):
            first: dict[str, JobMessage] = {}
            for m in messages:
                first.setdefault(m.id, m)
            messages = list(first.values())
        data = [encode_message(m) for m in messages]
        if all(m.job.opts.id is None for m in messages):
            fused = self._fused()
            if fused is not None:
                await self._store_and_publish_fused(fused, messages, data)
            else:
                await self._store_and_publish_new(messages, data, _records(messages, data))
        else:
            await self._store_then_publish(messages, data, _records(messages, data))
        if any(m.schedule_id for m in messages):
            await note_schedules(self._app.broker, messages, self._app.log)
        return ids

    async def _store_and_publish_fused(self, fused: FusedEnqueue, messages: Sequence[JobMessage], data: list[bytes]) -> None:
        """Record and publish in one step per queue and batch (the broker leaves no record of a job it did not publish)."""
        by_queue: dict[str, list[int]] = {}
        for i, m in enumerate(messages):
            by_queue.setdefault(m.queue, []).append(i)
        now = self._app.clock.now()
        done = 0
        for queue, indexes in by_queue.items():
            for start in range(0, len(indexes), _FUSED_BATCH):
                part = [messages[i] for i in indexes[start : start + _FUSED_BATCH]]
                part_data = [data[i] for i in indexes[start : start + _FUSED_BATCH]]
                envelopes = [Envelope(m.id, d, _delay(m, now)) for m, d in zip(part, part_data, strict=True)]
                try:
                    await fused(queue, envelopes, _records(part, part_data))
                except Exception as exc:
                    if isinstance(exc, TasqueueError) and not done:
                        raise
                    before = f" (the {done} before them were)" if done else ""
                    msg = f"could not enqueue {len(messages) - done} job(s){before}: {exc}"
                    raise BrokerError(msg) from exc
                done += len(part)

    async def _store_and_publish_new(self, messages: Sequence[JobMessage], data: list[bytes], writes: list[Write]) -> None:
        # A worker may run a job before its "queued" record lands: that write is "only if
        # absent", so it never overwrites what the worker recorded.
        now = self._app.clock.now()
        publishing = start_task(self.publish([(m.queue, m.id, d, _delay(m, now)) for m, d in zip(messages, data, strict=True)]))
        stored: Exception | None = None
        try:
            await self._app.results.set_many(writes)
        except asyncio.CancelledError:
            publishing.cancel()
            raise
        except Exception as exc:  # the publish decides the outcome; see below
            stored = exc
        try:
            await publishing
        except BaseException as exc:
            if stored is None:
                await asyncio.shield(self.forget(_unpublished(exc, messages)))
            raise
        if stored is not None:
            # The broker has the jobs and they will run; raising would invite the caller to
            # enqueue them again. Their status appears once a worker records it.
            self._app.log.error(
                "enqueued %d job(s) but could not store their records (%s); their status appears when a worker runs them",
                len(messages),
                stored,
            )

    async def _store_then_publish(self, messages: Sequence[JobMessage], data: list[bytes], writes: list[Write]) -> None:
        written = await self._app.results.set_many(writes)
        fresh = [m for m, ok in zip(messages, written, strict=False) if ok]
        now = self._app.clock.now()
        sends = [(m.queue, m.id, d, _delay(m, now)) for m, d, ok in zip(messages, data, written, strict=False) if ok]
        # An id that exists is someone's earlier enqueue. If that one still says queued, its
        # publish may have been lost (a crash in between): publish it again, as it was stored
        # (its queue, its bytes), never this call's job; brokers skip ids they hold.
        dupes = [m for m, ok in zip(messages, written, strict=False) if not ok]
        if dupes:
            stored = await self._app.results.get_many([job_key(m.id) for m in dupes])
            again = 0
            for raw in stored:
                if raw is None:
                    continue
                earlier = decode_job(raw)
                if earlier.status is JobStatus.QUEUED:
                    sends.append((earlier.queue, earlier.id, raw, _delay(earlier, now)))
                    again += 1
            self._app.log.debug("enqueue skipped %d job(s) whose id already exists", len(dupes) - again)
        try:
            await self.publish(sends)
        except BaseException as exc:
            if fresh:
                await asyncio.shield(self.forget(_unpublished(exc, fresh)))
            raise

    async def publish(self, sends: Sequence[tuple[str, str, bytes, float]]) -> None:
        """Publish ``(queue, id, data, delay)`` messages, each to its queue.

        Raises ``EnqueueError`` if some were published before the broker failed.
        """
        by_queue: dict[str, list[Envelope]] = {}
        for queue, id_, data, delay in sends:
            by_queue.setdefault(queue, []).append(Envelope(id_, data, delay))
        published: list[str] = []
        queues = list(by_queue.items())
        for n, (queue, envelopes) in enumerate(queues):
            try:
                await self._app.broker.enqueue(queue, envelopes)
            except Exception as exc:
                if isinstance(exc, EnqueueError):
                    published += exc.enqueued
                    unknown, failed = list(exc.unknown), list(exc.not_enqueued)
                else:
                    unknown, failed = [], [e.id for e in envelopes]
                if not (published or unknown):
                    if isinstance(exc, TasqueueError):
                        raise
                    msg = f"could not publish {len(sends)} job(s): {exc}"
                    raise BrokerError(msg) from exc
                failed += (e.id for _, later in queues[n + 1 :] for e in later)
                msg = (
                    f"published {len(published)} of {len(sends)} job(s) before the broker failed (their ids are in "
                    f".enqueued), {len(unknown)} may have been (.unknown: the reply was lost), {len(failed)} were not "
                    "(.not_enqueued). Enqueue the unknown and unpublished ones again under the same ids "
                    f"(JobOpts(id=...)) so that none runs twice. The broker said: {exc}"
                )
                raise EnqueueError(msg, enqueued=published, unknown=unknown, not_enqueued=failed) from exc
            published += (e.id for e in envelopes)

    async def forget(self, messages: Sequence[JobMessage]) -> None:
        """Delete the records of messages whose publish failed."""
        # A schedule's marker goes too: left behind, it would make every later start a no-op.
        keys = [job_key(m.id) for m in messages] + [schedule_key(m.id) for m in messages if m.schedule_id == m.id]
        try:
            await self._app.results.delete(keys)
        except Exception:
            self._app.log.exception("could not delete the records of %d job(s) whose publish failed", len(messages))


def _records(messages: Sequence[JobMessage], data: Sequence[bytes]) -> list[Write]:
    """The ``queued`` records of new messages ("only if absent"), and of the schedules they start."""
    # A job due later keeps its record until it runs (the run's writes bring the store's
    # expiry back): an eta beyond the expiry must not find its record gone.
    writes = [Write(job_key(m.id), d, version=0, persist=m.job.opts.eta is not None) for m, d in zip(messages, data, strict=True)]
    writes += [Write(schedule_key(m.id), d, persist=True) for m, d in zip(messages, data, strict=True) if m.schedule_id == m.id]
    return writes


def _unpublished(exc: BaseException, messages: Sequence[JobMessage]) -> list[JobMessage]:
    """Which of ``messages`` a failed publish surely did not publish: all, unless it says otherwise."""
    if isinstance(exc, EnqueueError):
        failed = set(exc.not_enqueued)
        return [m for m in messages if m.id in failed]
    return list(messages)


def _delay(m: JobMessage, now: datetime) -> float:
    """Seconds from ``now`` until a message's ``eta``, 0 without one."""
    eta = m.job.opts.eta
    return 0.0 if eta is None else max((eta - now).total_seconds(), 0.0)


def start_task(coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    """Run ``coro`` as a task; from Python 3.12 eagerly, up to its first real wait.

    A publish to an in-process backend, which never waits, then finishes without a trip through
    the event loop, which is most of what such a task costs; so does a no-op job's run.
    """
    if sys.version_info >= (3, 12):
        return asyncio.Task(coro, loop=asyncio.get_running_loop(), eager_start=True)
    return asyncio.create_task(coro)
