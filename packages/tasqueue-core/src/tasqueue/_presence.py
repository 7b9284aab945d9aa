"""What a worker tells the control plane, and what it learns from it, once per heartbeat.

Every ``interval`` a worker stores its record (host, pid, queues, in-flight jobs) with a time to
live of a few intervals, so a worker that dies drops out of ``Inspector.workers()`` on its own;
adds the jobs it finished (and the ones it set to retry) to the per-queue indexes, one batch per
beat rather than a write per job; and reads the paused queues. A consume loop checks ``gate``
before each fetch, so pausing costs the hot path one set lookup.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import traceback
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec

from tasqueue._keys import new_id
from tasqueue._outage import Outage
from tasqueue.control import ControlPlane, Finished, JobState, control_of
from tasqueue.results import Write

if TYPE_CHECKING:
    from tasqueue._worker import Worker

_encode = msgspec.msgpack.Encoder().encode
#: Seconds between beats; a record lives for ``_TTL_BEATS`` of them.
INTERVAL = 1.0
_TTL_BEATS = 5
_MAX_TRACEBACK = 64 * 1024


def traceback_writes(job_id: str, exc: BaseException | None) -> list[Write]:
    """The write that keeps a failed run's traceback for ``Inspector.job`` (none without an exception)."""
    if exc is None:
        return []
    from tasqueue.inspector import error_key

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
        self._done = 0
        self._failed = 0

    # ---- called by the worker ------------------------------------------------------------

    def finished(self, queues: dict[str, str], success: Iterable[str], failed: Iterable[str]) -> None:
        """Jobs whose outcome was just written; ``queues`` maps their ids to their queues."""
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

    async def run(self) -> None:
        if self.control is None:
            return
        outage = Outage(self.worker.log, "reporting to the control plane")
        while True:
            try:
                await self.beat()
            except Exception as exc:
                outage.failed(exc)  # one line per change of state, not one per beat
            else:
                outage.ok()
            await asyncio.sleep(self.interval)

    async def beat(self) -> None:
        control = self.control
        if control is None:
            return
        paused = await control.paused()
        for queue in self.worker.queues:
            if queue not in paused and queue in self.paused:
                self._resumed.pop(queue, asyncio.Event()).set()
        self.paused = {q for q in paused if q in self.worker.queues}
        if self._entries:
            entries, self._entries = self._entries, []
            try:
                await control.record(entries)
            except BaseException:
                self._entries[:0] = entries
                raise
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
        try:
            if self._entries:
                await self.control.record(self._entries)
                self._entries = []
            await self.control.leave(self.id)
        except Exception:
            self.worker.log.warning("could not remove this worker's record; it expires on its own", exc_info=True)


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
    try:
        await control.note_schedules(schedule_records(messages))
    except Exception:
        log.warning("could not record %d schedule(s) for inspection", len(messages), exc_info=True)
