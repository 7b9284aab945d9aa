"""``Inspector``: everything an operator reads or does, in one API over a Server's backends.

The CLI, ``tasqueue top`` and any dashboard are thin clients of it::

    insp = Inspector(srv)
    for q in await insp.queues():                       # counts per state, O(queues)
        print(q.name, q.counts.queued, q.counts.failed)
    page = await insp.jobs("emails", JobState.FAILED, limit=50)          # newest first
    more = await insp.jobs("emails", JobState.FAILED, cursor=page.cursor)
    story = await insp.job(page.jobs[0].id)             # message, attempts, error, traceback
    await insp.retry(JobFilter("emails", JobState.FAILED))                # all failed of a queue
    await insp.pause("emails"); await insp.resume("emails")
    await insp.workers(); await insp.schedules()

Reads and actions go through the broker's control plane (``tasqueue.control``) and the results
store; nothing here reads every record. Actions by filter work in chunks, so "retry all 200,000
failed" is many bounded calls, not one huge one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

import msgspec

from tasqueue._codec import DecodeErrors, decode_job, encode
from tasqueue._keys import RECORD_KEYS, error_key, job_key, result_key, schedule_key
from tasqueue.broker import Envelope
from tasqueue.control import ControlPlane, Counts, Finished, JobState, Listed, control_of
from tasqueue.errors import ConfigurationError, NotFoundError
from tasqueue.messages import JobMessage, JobStatus
from tasqueue.results import Write
from tasqueue.server import Server

__all__ = [
    "ActionReport",
    "Inspector",
    "JobFilter",
    "JobPage",
    "JobStory",
    "JobSummary",
    "QueueInfo",
    "ScheduleInfo",
    "WorkerInfo",
    "error_key",
]

#: Most jobs one chunk of a bulk action touches.
CHUNK = 500
#: Seconds a retry waits for a just-failed job's worker to let go of it.
SETTLE_WAIT = 5.0
MAX_PAGE = 1000

_WAITING = (JobState.QUEUED, JobState.DELAYED, JobState.RETRYING)
_INDEXED = (JobState.SUCCESSFUL, JobState.FAILED, JobState.RETRYING)

# One chunk of a bulk action: (id, stored message) pairs and the filter they came from, if any;
# returns how many were changed and the ids skipped.
_Chunk = Callable[[list[tuple[str, JobMessage | None]], "JobFilter | None"], Awaitable[tuple[int, list[str]]]]


class QueueInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A queue: its name, counts per state, whether it is paused, and how many live workers consume it."""

    name: str
    counts: Counts
    paused: bool
    workers: int


class JobSummary(msgspec.Struct, frozen=True, kw_only=True):
    """One row of a job list. ``at`` is the index time: due, leased, or finished (Unix seconds)."""

    id: str
    queue: str
    state: JobState
    task: str
    status: str
    retried: int
    max_retry: int
    error: str
    payload_size: int
    enqueued_at: datetime | None
    at: datetime | None


class JobPage(msgspec.Struct, frozen=True, kw_only=True):
    """A page of jobs and the cursor of the next (``None`` at the end)."""

    jobs: list[JobSummary]
    cursor: str | None


class JobStory(msgspec.Struct, frozen=True, kw_only=True):
    """Everything known about one job.

    Attributes:
        message: The stored message (status, attempts, last error, the job and its payload).
        state: Where the job is, as ``jobs`` lists it.
        traceback: The traceback of the last failed run, ``""`` if none was stored.
        result_size: Bytes of the saved result, ``None`` if there is none.
        payload_size: Bytes of the payload.
    """

    message: JobMessage
    state: JobState
    traceback: str
    result_size: int | None
    payload_size: int


class JobFilter(msgspec.Struct, frozen=True):
    """All jobs of ``queue`` in ``state``, optionally only those of ``task``."""

    queue: str
    state: JobState
    task: str | None = None


class ActionReport(msgspec.Struct, frozen=True, kw_only=True):
    """What a bulk action did: how many jobs it matched, how many it changed, and the ids it skipped."""

    matched: int
    done: int
    skipped: list[str] = []


class WorkerInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A live worker, as it reports itself every heartbeat."""

    id: str
    host: str
    pid: int
    queues: dict[str, int]  # queue -> concurrency
    in_flight: dict[str, list[str]]  # queue -> job ids
    paused: list[str]  # queues it has stopped fetching from
    started: datetime
    heartbeat: datetime
    done: int = 0
    failed: int = 0
    version: str = ""


class ScheduleInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A recurring job: its id (for ``Server.cancel_schedule``), task, queue, cron expression and next run."""

    id: str
    task: str
    queue: str
    cron: str
    next_run: datetime | None
    next_job_id: str


_decode_worker = msgspec.msgpack.Decoder(WorkerInfo).decode
_decode_schedule = msgspec.msgpack.Decoder(ScheduleInfo).decode


def state_of(message: JobMessage, now: datetime | None = None) -> JobState:
    """Where a job is, from its stored message."""
    status = message.status
    if status is JobStatus.SUCCESSFUL:
        return JobState.SUCCESSFUL
    if status is JobStatus.FAILED:
        return JobState.FAILED
    if status is JobStatus.PROCESSING:
        return JobState.RUNNING
    if status is JobStatus.RETRYING:
        return JobState.RETRYING
    eta = message.job.opts.eta
    if eta is not None and eta > (now or datetime.now(UTC)):
        return JobState.DELAYED
    return JobState.QUEUED


def _time(at: float) -> datetime | None:
    return datetime.fromtimestamp(at, UTC) if at > 0 else None


class Inspector:
    """Read and act on a Server's queues, jobs, workers and schedules.

    Args:
        server: The Server whose broker and results store to inspect. Its broker must have a
            control plane (``memory://`` and Redis do); ``ConfigurationError`` otherwise.
    """

    def __init__(self, server: Server) -> None:
        control = control_of(server.broker)
        if control is None:
            msg = f"the broker {type(server.broker).__name__} has no control plane (broker.control), so it cannot be inspected"
            raise ConfigurationError(msg)
        self.server = server
        self.control: ControlPlane = control
        self.results = server.results

    # ---- reading -------------------------------------------------------------------------

    async def queues(self) -> list[QueueInfo]:
        """Every known queue with its counts, sorted by name."""
        names = sorted(await self.control.queues())
        return await self._infos(names)

    async def queue(self, name: str) -> QueueInfo:
        """One queue's counts (zeros for a queue nothing was ever sent to)."""
        return (await self._infos([name]))[0]

    async def _infos(self, names: list[str]) -> list[QueueInfo]:
        counts = await self.control.counts(names)
        consumers: dict[str, int] = {}
        for w in await self.workers():
            for q in w.queues:
                consumers[q] = consumers.get(q, 0) + 1
        return [
            QueueInfo(name=n, counts=c, paused=c.paused, workers=consumers.get(n, 0)) for n, c in zip(names, counts, strict=True)
        ]

    async def jobs(
        self,
        queue: str,
        state: JobState,
        *,
        cursor: str | None = None,
        limit: int = 50,
        newest_first: bool = True,
        task: str | None = None,
    ) -> JobPage:
        """A page of the jobs of ``queue`` in ``state``; pass the returned cursor for the next page.

        ``task`` keeps only that task's jobs (a page may then hold fewer than ``limit``).
        """
        if not 1 <= limit <= MAX_PAGE:
            msg = f"limit must be between 1 and {MAX_PAGE}, got {limit}"
            raise ValueError(msg)
        state = JobState(state)
        listed, next_cursor = await self.control.page(queue, state, cursor=cursor, limit=limit, newest_first=newest_first)
        messages = await self._messages(listed)
        rows: list[JobSummary] = []
        for entry, message in zip(listed, messages, strict=True):
            if message is None or (task is not None and message.job.task != task):
                continue
            rows.append(
                JobSummary(
                    id=entry.id,
                    queue=queue,
                    state=state,
                    task=message.job.task,
                    status=message.status,
                    retried=message.retried,
                    max_retry=message.max_retry,
                    error=message.prev_err,
                    payload_size=len(message.job.payload),
                    enqueued_at=message.enqueued_at,
                    at=_time(entry.at),
                )
            )
        return JobPage(jobs=rows, cursor=next_cursor)

    async def _messages(self, listed: Sequence[Listed]) -> list[JobMessage | None]:
        """The stored message of each listed job; the broker's bytes where the store has none."""
        if not listed:
            return []
        stored = await self.results.get_many([job_key(e.id) for e in listed])
        out: list[JobMessage | None] = []
        for entry, raw in zip(listed, stored, strict=True):
            message = None
            for data in (raw, entry.data):
                if data is None:
                    continue
                try:
                    message = decode_job(data)
                except DecodeErrors:
                    continue
                break
            out.append(message)
        return out

    async def job(self, job_id: str) -> JobStory:
        """A job's whole story; ``NotFoundError`` if nothing is stored under ``job_id``."""
        raw, result, tb = await self.results.get_many([job_key(job_id), result_key(job_id), error_key(job_id)])
        if raw is None:
            msg = f"job {job_id!r} not found (never enqueued, expired, or deleted)"
            raise NotFoundError(msg)
        message = decode_job(raw)
        return JobStory(
            message=message,
            state=state_of(message),
            traceback=tb.decode("utf-8", "replace") if tb is not None else "",
            result_size=None if result is None else len(result),
            payload_size=len(message.job.payload),
        )

    async def workers(self) -> list[WorkerInfo]:
        """Live workers (those whose last heartbeat is recent), sorted by host and pid."""
        out: list[WorkerInfo] = []
        for raw in await self.control.workers():
            try:
                out.append(_decode_worker(raw))
            except DecodeErrors:
                continue
        return sorted(out, key=lambda w: (w.host, w.pid, w.id))

    async def schedules(self) -> list[ScheduleInfo]:
        """Active schedules with their next run, soonest first; cancelled ones are forgotten on the way."""
        records = await self.control.schedules()
        if not records:
            return []
        active = await self.results.get_many([schedule_key(sid) for sid, _ in records])
        out: list[ScheduleInfo] = []
        gone: list[str] = []
        for (sid, raw), alive in zip(records, active, strict=True):
            if alive is None:
                gone.append(sid)
                continue
            try:
                out.append(_decode_schedule(raw))
            except DecodeErrors:
                gone.append(sid)
        if gone:
            await self.control.drop_schedules(gone)
        far = datetime.max.replace(tzinfo=UTC)
        return sorted(out, key=lambda s: (s.next_run or far, s.id))

    # ---- acting --------------------------------------------------------------------------

    async def pause(self, queue: str) -> None:
        """Stop workers fetching from ``queue`` (within about a heartbeat and one fetch wait); enqueues still land."""
        await self.control.set_paused(queue, True)

    async def resume(self, queue: str) -> None:
        """Let workers fetch from ``queue`` again."""
        await self.control.set_paused(queue, False)

    async def count(self, target: Sequence[str] | JobFilter) -> int:
        """How many jobs an action on ``target`` would match (a filter with a task reads the jobs to know)."""
        if not isinstance(target, JobFilter):
            return len(target)
        if target.task is None:
            return (await self.queue(target.queue)).counts.get(target.state)
        n = 0
        cursor: str | None = None
        while True:
            page = await self.jobs(target.queue, target.state, cursor=cursor, limit=CHUNK, task=target.task)
            n += len(page.jobs)
            if page.cursor is None:
                return n
            cursor = page.cursor

    async def retry(self, target: Sequence[str] | JobFilter) -> ActionReport:
        """Run failed jobs again from their first attempt (ids, or a filter over ``failed`` jobs)."""
        if isinstance(target, JobFilter) and target.state is not JobState.FAILED:
            msg = f"retry takes failed jobs; the filter asks for {target.state.value!r}"
            raise ValueError(msg)
        return await self._apply(target, self._retry_chunk)

    async def run_now(self, target: Sequence[str] | JobFilter) -> ActionReport:
        """Make delayed or retrying jobs ready now (ids, or a filter over ``delayed``/``retrying`` jobs)."""
        if isinstance(target, JobFilter) and target.state not in (JobState.DELAYED, JobState.RETRYING):
            msg = f"run_now takes delayed or retrying jobs; the filter asks for {target.state.value!r}"
            raise ValueError(msg)
        return await self._apply(target, self._run_now_chunk)

    async def delete(self, target: Sequence[str] | JobFilter) -> ActionReport:
        """Delete jobs that are not running: their messages, records, results and index entries."""
        if isinstance(target, JobFilter) and target.state is JobState.RUNNING:
            msg = "running jobs cannot be deleted: they belong to a worker until they finish"
            raise ValueError(msg)
        return await self._apply(target, self._delete_chunk, deleting=True)

    async def purge(self, queue: str, states: Sequence[JobState] = (), *, task: str | None = None) -> ActionReport:
        """Delete every job of ``queue`` in ``states`` (default: all but running); returns the totals."""
        chosen = [JobState(s) for s in states] or [s for s in JobState if s is not JobState.RUNNING]
        matched = done = 0
        skipped: list[str] = []
        for state in chosen:
            report = await self.delete(JobFilter(queue, state, task))
            matched += report.matched
            done += report.done
            skipped += report.skipped
        return ActionReport(matched=matched, done=done, skipped=skipped)

    async def _apply(self, target: Sequence[str] | JobFilter, act: _Chunk, *, deleting: bool = False) -> ActionReport:
        matched = done = 0
        skipped: list[str] = []
        if not isinstance(target, JobFilter):
            ids = list(dict.fromkeys(target))
            for start in range(0, len(ids), CHUNK):
                part = ids[start : start + CHUNK]
                stored = await self.results.get_many([job_key(i) for i in part])
                found: list[tuple[str, JobMessage | None]] = []
                for job_id, raw in zip(part, stored, strict=True):
                    found.append((job_id, _decode_or_none(raw)))
                n, miss = await act(found, None)
                matched += len(part)
                done += n
                skipped += miss
            return ActionReport(matched=matched, done=done, skipped=skipped)
        if target.state is JobState.RUNNING:
            msg = "running jobs belong to a worker until they finish; nothing here acts on them"
            raise ValueError(msg)
        if target.task is None and target.state in _WAITING and deleting:
            # Whole states of a queue go without reading each message first.
            while True:
                removed = await self.control.remove_all(target.queue, target.state, CHUNK)
                if not removed:
                    break
                await self._forget_records(removed)
                if target.state is JobState.RETRYING:
                    await self.control.forget(target.queue, JobState.RETRYING, removed)
                matched += len(removed)
                done += len(removed)
            return ActionReport(matched=matched, done=done)
        # Oldest first, re-reading from the start each time: acted-on jobs leave the state, so
        # the next chunk is the next unchanged one. Ids skipped are stepped over by the cursor.
        cursor: str | None = None
        seen: set[str] = set()
        while True:
            listed, cursor_next = await self.control.page(
                target.queue, target.state, cursor=cursor, limit=CHUNK, newest_first=False
            )
            fresh = [e for e in listed if e.id not in seen]
            if not fresh:
                if cursor_next is None or not listed:
                    break
                cursor = cursor_next
                continue
            messages = await self._messages(fresh)
            chunk: list[tuple[str, JobMessage | None]] = []
            for entry, message in zip(fresh, messages, strict=True):
                seen.add(entry.id)
                if target.task is not None and (message is None or message.job.task != target.task):
                    continue
                chunk.append((entry.id, message))
            if chunk:
                n, miss = await act(chunk, target)
                matched += len(chunk)
                done += n
                skipped += miss
            if cursor_next is None:
                break
            # Queued pages are positions: what was removed shifted the rest, so start over.
            cursor = None if target.state is JobState.QUEUED else cursor_next
        return ActionReport(matched=matched, done=done, skipped=skipped)

    async def _retry_chunk(self, found: list[tuple[str, JobMessage | None]], target: JobFilter | None) -> tuple[int, list[str]]:
        fresh: list[JobMessage] = []
        skipped: list[str] = []
        for job_id, message in found:
            if message is None or message.status is not JobStatus.FAILED:
                skipped.append(job_id)
                continue
            job = message.job
            if job.opts.eta is not None:
                job = msgspec.structs.replace(job, opts=msgspec.structs.replace(job.opts, eta=None))
            fresh.append(
                msgspec.structs.replace(
                    message,
                    status=JobStatus.QUEUED,
                    retried=0,
                    stalls=0,
                    processed_at=None,
                    enqueued_at=datetime.now(UTC),
                    job=job,
                )
            )
        if not fresh:
            return 0, skipped
        fresh, unsettled = await self._settled(fresh)
        skipped += unsettled
        if not fresh:
            return 0, skipped
        data = [encode(m) for m in fresh]
        # An unversioned write counts as lowest, so the worker's first status write wins over it.
        await self.results.set_many([Write(job_key(m.id), d) for m, d in zip(fresh, data, strict=True)])
        await self.results.delete([], ids=[m.id for m in fresh])
        by_queue: dict[str, list[Envelope]] = {}
        for m, d in zip(fresh, data, strict=True):
            by_queue.setdefault(m.queue, []).append(Envelope(m.id, d))
        for queue, envelopes in by_queue.items():
            await self.server.broker.enqueue(queue, envelopes)
            await self.control.forget(queue, JobState.FAILED, [e.id for e in envelopes])
        return len(fresh), skipped

    async def _settled(self, messages: list[JobMessage]) -> tuple[list[JobMessage], list[str]]:
        """Split failed jobs into those their broker has let go of and those it still holds.

        A job's failure is stored just before its worker acks it; a retry published in between
        would be dropped as a duplicate of the message being acked, so wait for the ack (it
        follows within a batch's round trip), up to ``SETTLE_WAIT`` seconds.
        """
        by_queue: dict[str, list[str]] = {}
        for m in messages:
            by_queue.setdefault(m.queue, []).append(m.id)
        loop = asyncio.get_running_loop()
        give_up = loop.time() + SETTLE_WAIT
        held: set[str] = set()
        while True:
            held = set()
            for queue, ids in by_queue.items():
                held.update(await self.control.held(queue, ids))
            if not held or loop.time() >= give_up:
                break
            await asyncio.sleep(0.02)  # the worker's ack is in flight; nothing announces it
        return [m for m in messages if m.id not in held], sorted(held)

    async def _run_now_chunk(self, found: list[tuple[str, JobMessage | None]], target: JobFilter | None) -> tuple[int, list[str]]:
        by_queue: dict[str, list[str]] = {}
        for job_id, message in found:
            queue = target.queue if target is not None else (message.queue if message is not None else None)
            if queue is not None:
                by_queue.setdefault(queue, []).append(job_id)
        moved: set[str] = set()
        for queue, ids in by_queue.items():
            promoted = await self.control.promote(queue, ids)
            moved.update(promoted)
            if promoted:
                await self.control.forget(queue, JobState.RETRYING, promoted)
        return len(moved), [i for i, _ in found if i not in moved]

    async def _delete_chunk(self, found: list[tuple[str, JobMessage | None]], target: JobFilter | None) -> tuple[int, list[str]]:
        skipped: list[str] = []
        gone: list[str] = []
        by_queue: dict[str, list[tuple[str, JobState]]] = {}
        now = datetime.now(UTC)
        for job_id, message in found:
            if message is None:
                if target is None:
                    skipped.append(job_id)
                    continue
                state, queue = target.state, target.queue
            else:
                state = target.state if target is not None else state_of(message, now)
                queue = target.queue if target is not None else message.queue
            if state is JobState.RUNNING:
                skipped.append(job_id)
                continue
            by_queue.setdefault(queue, []).append((job_id, state))
        for queue, entries in by_queue.items():
            waiting = [i for i, s in entries if s in _WAITING]
            removed = set(await self.control.remove(queue, waiting)) if waiting else set()
            for job_id, state in entries:
                if state in _WAITING and job_id not in removed and target is None:
                    # Not waiting in the broker after all: it may be running now. Leave it.
                    skipped.append(job_id)
                    continue
                gone.append(job_id)
            for state in _INDEXED:
                ids = [i for i, s in entries if s is state and i in gone]
                if ids:
                    await self.control.forget(queue, state, ids)
        await self._forget_records(gone)
        return len(gone), skipped

    async def _forget_records(self, ids: Sequence[str]) -> None:
        if ids:
            keys = [make(i) for i in ids for make in RECORD_KEYS]
            await self.results.delete(keys, ids=list(ids))

    async def record(self, entries: Sequence[Finished]) -> None:
        """Add index entries directly (tools that import jobs; workers do this on their own)."""
        await self.control.record(entries)


def _decode_or_none(raw: bytes | None) -> JobMessage | None:
    if raw is None:
        return None
    try:
        return decode_job(raw)
    except DecodeErrors:
        return None
