"""What a worker tells the control plane, and what it learns from it, once per heartbeat.

Every ``interval`` a worker stores its record (host, pid, queues, in-flight jobs) with a time to
live of a few intervals, so a worker that dies drops out of ``Inspector.workers()`` on its own,
and reads the paused queues. The jobs it finished (and the ones it set to retry) go to the
per-queue indexes beside the outcomes the settler writes: one write at a time, in the background,
and at most one every ``COALESCE`` seconds, so the hot path never waits for it and a busy worker
sends one index write for many batches (per batch, it cost a fifth of the worker's time on Redis). A consume loop checks ``gate``
before each fetch, so pausing costs the hot path one set lookup.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import traceback
from collections.abc import Coroutine, Iterable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec

from tasqueue._keys import error_key, new_id
from tasqueue.control import ControlPlane, Finished, JobState, control_of
from tasqueue.results import Write

if TYPE_CHECKING:
    from tasqueue._worker import Worker

_encode = msgspec.msgpack.Encoder().encode
#: Seconds between beats; a record lives for ``_TTL_BEATS`` of them.
INTERVAL = 1.0
_TTL_BEATS = 5
#: Longest the worker waits for the control plane at any point: inspection data is never worth
#: stalling jobs for (the write goes on in the background, or is retried with the next beat).
PATIENCE = 2.0
#: Shortest time between two index writes: the entries of the batches settled meanwhile go together.
COALESCE = 0.05
_MAX_TRACEBACK = 64 * 1024


def traceback_writes(job_id: str, exc: BaseException | None) -> list[Write]:
    """The write that keeps a failed run's traceback for ``Inspector.job`` (none without an exception)."""
    if exc is None:
        return []
    text = "".join(traceback.format_exception(exc))[-_MAX_TRACEBACK:]
    return [Write(error_key(job_id), text.encode("utf-8", "replace"))]


class Presence:
    """One worker's heartbeat to the control plane; inert when the broker has none."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.control: ControlPlane | None = control_of(worker.broker)
        # Beats stay within a lease's heartbeat period, so short leases (tests) get quick beats.
        self.interval = min(INTERVAL, worker.broker.visibility_timeout / 3)
        self.id = new_id()
        self.started = datetime.now(UTC)
        self.paused: set[str] = set()
        self._parked: set[str] = set()
        self._resumed: dict[str, asyncio.Event] = {}
        self._entries: list[Finished] = []
        self._writing: asyncio.Task[None] | None = None
        self._running: asyncio.Task[Any] | None = None
        self._stopping: asyncio.Event | None = None
        self._done = 0
        self._failed = 0

    # ---- called by the worker ------------------------------------------------------------

    def finished(self, queues: dict[str, str], success: Iterable[str], failed: Iterable[str]) -> None:
        """Index the jobs of a batch whose outcomes are being written; ``queues`` maps their ids to their queues.

        The entries (and the retries noted meanwhile) are written by one background writer, beside
        the outcomes: a slow control plane never holds up the acks, and entries wait for the
        writer's next round meanwhile. A worker killed while that write is in flight
        leaves its entries out of the counts (the job records are complete).
        """
        now = time.time()
        for ids, state in ((success, JobState.SUCCESSFUL), (failed, JobState.FAILED)):
            for job_id in ids:
                queue = queues.get(job_id)
                if queue is not None:
                    if self.control is not None:
                        self._entries.append(Finished(queue, job_id, state, now))
                    if state is JobState.SUCCESSFUL:
                        self._done += 1
                    else:
                        self._failed += 1
        if self.control is not None and self._entries and (self._writing is None or self._writing.done()):
            self._writing = asyncio.create_task(self._write())

    async def _write(self) -> None:
        """Write the entries, then keep the writer's slot ``COALESCE`` seconds; again while entries arrive."""
        while self._entries and await self._record():  # noqa: ASYNC110 - a pause to gather entries, not a wait
            await asyncio.sleep(COALESCE)

    async def _record(self) -> bool:
        """Write the buffered index entries; on failure keep them for the next beat (raises only a cancellation)."""
        control = self.control
        if control is None or not self._entries:
            return True
        entries, self._entries = self._entries, []
        try:
            await control.record(entries)
        except asyncio.CancelledError:
            self._entries[:0] = entries
            raise
        except Exception:
            self._entries[:0] = entries
            self.worker.log.warning(
                "could not index %d finished job(s); retrying with the next beat", len(entries), exc_info=True
            )
            return False
        return True

    def retrying(self, queue: str, job_id: str, delay: float) -> None:
        if self.control is not None:
            self._entries.append(Finished(queue, job_id, JobState.RETRYING, time.time() + delay))

    async def gate(self, queue: str) -> None:
        """Return once ``queue`` is not paused (at once, mostly)."""
        while queue in self.paused:
            event = self._resumed.setdefault(queue, asyncio.Event())
            self._parked.add(queue)
            try:
                await event.wait()
            finally:
                self._parked.discard(queue)

    # ---- the beat ------------------------------------------------------------------------

    def start(self) -> None:
        """Beat in the background until ``stop()``; ``leave()`` waits for the beats to end."""
        self._stopping = asyncio.Event()
        self._running = asyncio.create_task(self.run(), name="tasqueue-presence")

    async def run(self) -> None:
        if self.control is None or self._stopping is None:
            return
        while not self._stopping.is_set():
            await unhurried(self.beat(), "report to the control plane", self.worker.log)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.interval)

    def stop(self) -> None:
        """End the beats (the one under way finishes: control-plane calls are never cut short)."""
        if self._stopping is not None:
            self._stopping.set()

    async def beat(self) -> None:
        control = self.control
        if control is None:
            return
        paused = await control.paused()
        for queue in self.worker.queues:
            if queue not in paused and queue in self.paused:
                self._resumed.pop(queue, asyncio.Event()).set()
        self.paused = {q for q in paused if q in self.worker.queues}
        if self._writing is None or self._writing.done():
            await self._record()
        await control.beat(self.id, _encode(self.record()), self.interval * _TTL_BEATS)

    def record(self) -> Any:
        from tasqueue.inspector import WorkerInfo

        worker = self.worker
        return WorkerInfo(
            id=self.id,
            host=socket.gethostname(),
            pid=os.getpid(),
            queues={q: c.concurrency for q, c in worker.task_queues.items()},
            in_flight=worker.in_flight(),
            paused=sorted(self._parked),
            started=self.started,
            heartbeat=datetime.now(UTC),
            done=self._done,
            failed=self._failed,
            version=_version(),
        )

    async def leave(self) -> None:
        """Flush what is left and remove this worker's record; best effort, on shutdown."""
        if self.control is None:
            return
        self.stop()
        pending = {t for t in (self._running, self._writing) if t is not None and not t.done()}
        if pending:
            await asyncio.wait(pending, timeout=PATIENCE)
        await unhurried(self._leave(), "remove this worker's record (it expires on its own)", self.worker.log)

    async def _leave(self) -> None:
        await self._record()
        if self.control is not None:
            await self.control.leave(self.id)


def schedule_records(messages: Sequence[Any]) -> list[tuple[str, bytes]]:
    """Control-plane records of the schedules whose runs are in ``messages`` (``JobMessage``s)."""
    from tasqueue.inspector import ScheduleInfo

    out: list[tuple[str, bytes]] = []
    for m in messages:
        if m.schedule_id:
            info = ScheduleInfo(
                id=m.schedule_id,
                task=m.job.task,
                queue=m.queue,
                cron=m.schedule,
                next_run=m.job.opts.eta,
                next_job_id=m.id,
            )
            out.append((m.schedule_id, _encode(info)))
    return out


_VERSION: str | None = None


def _version() -> str:
    global _VERSION  # noqa: PLW0603 - read once per process, on the first beat
    if _VERSION is None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            _VERSION = version("tasqueue-core")
        except PackageNotFoundError:
            _VERSION = ""
    return _VERSION


async def note_schedules(broker: object, messages: Sequence[Any], log: Any) -> None:
    """Tell the broker's control plane about the schedules of ``messages``.

    Best effort: a lost note only hides a schedule from listings until its next run.
    """
    control = control_of(broker)
    if control is None:
        return
    await unhurried(control.note_schedules(schedule_records(messages)), "record schedules for inspection", log)


async def unhurried(call: Coroutine[Any, Any, None], what: str, log: Any) -> None:
    """Run a control-plane call, waiting for it ``PATIENCE`` seconds at most, and never cancel it.

    Cutting a client call short can leave its connection mid-reply (redis-py's cluster client
    then hangs the next caller); a slow call instead goes on in the background.
    """
    task = asyncio.ensure_future(call)
    _LATE.add(task)
    task.add_done_callback(_LATE.discard)
    done, _ = await asyncio.wait({task}, timeout=PATIENCE)
    if not done:
        log.warning("could not %s within %.0fs; carrying on", what, PATIENCE)
        return
    exc = task.exception()
    if exc is not None:
        log.warning("could not %s: %s", what, exc, exc_info=exc)


#: Control-plane calls still running in the background, kept referenced until they end.
_LATE: set[asyncio.Future[None]] = set()
