"""The control plane of ``memory://``: counts, pages and actions over a ``MemoryBroker``'s queues.

Counts are the sizes of the broker's own structures and of the indexes kept here; pages sort
what one state holds, which is fine for an in-process backend (the Redis one keeps sorted sets).
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from tasqueue.control import Counts, Finished, JobState, Listed

if TYPE_CHECKING:
    from tasqueue.memory import MemoryBroker, _Queue

#: Seconds index entries (finished jobs per queue) are kept, and the most kept per index.
RETENTION = 86400.0
INDEX_LIMIT = 100_000


def _cursor(at: float, id_: str) -> str:
    return f"{at!r}|{id_}"


def _parse(cursor: str) -> tuple[float, str]:
    at, _, id_ = cursor.partition("|")
    try:
        return float(at), id_
    except ValueError:
        msg = f"not a cursor of this list: {cursor!r}"
        raise ValueError(msg) from None


def _slice(
    entries: list[tuple[float, str]], cursor: str | None, limit: int, newest_first: bool
) -> tuple[list[tuple[float, str]], str | None]:
    """A page of ``entries`` (sorted by time, then id) strictly after ``cursor`` in the chosen direction."""
    if newest_first:
        entries = entries[::-1]
    if cursor is not None:
        key = _parse(cursor)
        entries = [e for e in entries if (e < key if newest_first else e > key)]
    page = entries[:limit]
    more = len(entries) > limit
    return page, (_cursor(*page[-1]) if more and page else None)


class MemoryControl:
    """``tasqueue.control.ControlPlane`` for one ``MemoryBroker``."""

    def __init__(self, broker: MemoryBroker) -> None:
        self._broker = broker
        self._paused: set[str] = set()
        self._index: dict[tuple[str, JobState], dict[str, float]] = {}
        self._workers: dict[str, tuple[float, bytes]] = {}
        self._schedules: dict[str, bytes] = {}
        self._known: set[str] = set()
        self._totals: dict[tuple[str, JobState], int] = {}

    # ---- helpers -------------------------------------------------------------------------

    def _q(self, queue: str) -> _Queue:
        q = self._broker._queue(queue)
        self._broker._tick(q, self._broker._clock())
        return q

    def _unix(self, monotonic: float) -> float:
        return time.time() + (monotonic - self._broker._clock())

    def _retrying(self, queue: str, q: _Queue) -> dict[str, float]:
        """Retry entries still to come due (a worker writes one just before it hands the job back)."""
        index = self._index.get((queue, JobState.RETRYING), {})
        now = time.time()
        for id_ in [i for i, at in index.items() if at <= now]:
            del index[id_]
        return index

    def _entries(self, queue: str, state: JobState) -> list[tuple[float, str]]:
        q = self._q(queue)
        # Broker times stay on the broker's monotonic clock here (stable cursors); pages convert them.
        if state is JobState.DELAYED:
            retry = self._retrying(queue, q)
            return sorted((due, id_) for due, _, id_ in q.delayed if id_ in q.items and id_ not in retry)
        if state is JobState.RUNNING:
            return sorted((deadline, id_) for id_, (deadline, _) in q.leased.items())
        if state is JobState.RETRYING:
            return sorted((at, id_) for id_, at in self._retrying(queue, q).items())
        return sorted((at, id_) for id_, at in self._index.get((queue, state), {}).items())

    # ---- reading -------------------------------------------------------------------------

    async def queues(self) -> list[str]:
        return sorted(set(self._broker._queues) | self._known | self._paused | {q for q, _ in self._index})

    async def counts(self, queues: Sequence[str]) -> list[Counts]:
        out: list[Counts] = []
        for queue in queues:
            q = self._q(queue)
            retrying = len(self._retrying(queue, q))
            out.append(
                Counts(
                    queued=len(q.ready),
                    delayed=max(len(q.delayed) - retrying, 0),
                    running=len(q.leased),
                    retrying=retrying,
                    successful=len(self._index.get((queue, JobState.SUCCESSFUL), ())),
                    failed=len(self._index.get((queue, JobState.FAILED), ())),
                    paused=queue in self._paused,
                    total_successful=self._totals.get((queue, JobState.SUCCESSFUL), 0),
                    total_failed=self._totals.get((queue, JobState.FAILED), 0),
                )
            )
        return out

    async def page(
        self, queue: str, state: JobState, *, cursor: str | None, limit: int, newest_first: bool
    ) -> tuple[list[Listed], str | None]:
        q = self._q(queue)
        if state is JobState.QUEUED:
            ids = list(q.ready)
            if newest_first:
                ids.reverse()
            start = int(cursor) if cursor else 0
            part = ids[start : start + limit]
            more = start + limit < len(ids)
            return [Listed(i, 0.0, q.items[i].data) for i in part], (str(start + limit) if more else None)
        page, next_cursor = _slice(self._entries(queue, state), cursor, limit, newest_first)
        monotonic = state in (JobState.DELAYED, JobState.RUNNING)
        return [
            Listed(id_, self._unix(at) if monotonic else at, q.items[id_].data if id_ in q.items else None) for at, id_ in page
        ], next_cursor

    # ---- acting on messages --------------------------------------------------------------

    def _drop(self, q: _Queue, ids: Iterable[str]) -> list[str]:
        dropped = [i for i in dict.fromkeys(ids) if i in q.items and i not in q.leased]
        if dropped:
            gone = set(dropped)
            for i in dropped:
                del q.items[i]
            kept = [i for i in q.ready if i not in gone]
            q.ready.clear()
            q.ready.extend(kept)
            q.delayed[:] = [e for e in q.delayed if e[2] not in gone]
            heapq.heapify(q.delayed)
        return dropped

    async def held(self, queue: str, ids: Sequence[str]) -> list[str]:
        q = self._q(queue)
        return [i for i in ids if i in q.items]

    async def remove(self, queue: str, ids: Sequence[str]) -> list[str]:
        return self._drop(self._q(queue), ids)

    async def remove_all(self, queue: str, state: JobState, limit: int) -> list[str]:
        if state not in (JobState.QUEUED, JobState.DELAYED, JobState.RETRYING):
            msg = f"remove_all takes queued, delayed or retrying, not {state.value!r}"
            raise ValueError(msg)
        q = self._q(queue)
        waiting = list(q.ready) if state is JobState.QUEUED else [id_ for _, id_ in self._entries(queue, state)]
        return self._drop(q, waiting[:limit])

    async def promote(self, queue: str, ids: Sequence[str]) -> list[str]:
        q = self._q(queue)
        wanted = set(ids)
        moved = [e for e in sorted(q.delayed) if e[2] in wanted and e[2] in q.items and e[2] not in q.leased]
        if moved:
            gone = {e[2] for e in moved}
            q.delayed[:] = [e for e in q.delayed if e[2] not in gone]
            heapq.heapify(q.delayed)
            q.ready.extend(e[2] for e in moved)
            q.wakeup.notify()
        return [e[2] for e in moved]

    # ---- indexes -------------------------------------------------------------------------

    async def record(self, entries: Sequence[Finished]) -> None:
        touched: set[tuple[str, JobState]] = set()
        for e in entries:
            key = (e.queue, JobState(e.state))
            index = self._index.setdefault(key, {})
            if e.id not in index:
                self._totals[key] = self._totals.get(key, 0) + 1
            index.pop(e.id, None)
            index[e.id] = e.at
            touched.add(key)
            if key[1] is not JobState.RETRYING:
                # A job that finished is no longer waiting to be retried.
                self._index.get((e.queue, JobState.RETRYING), {}).pop(e.id, None)
        cutoff = time.time() - RETENTION
        for key in touched:
            index = self._index[key]
            if key[1] is JobState.RETRYING:
                continue
            while index:
                first = next(iter(index))
                if index[first] >= cutoff and len(index) <= INDEX_LIMIT:
                    break
                del index[first]

    async def forget(self, queue: str, state: JobState, ids: Sequence[str]) -> None:
        index = self._index.get((queue, JobState(state)))
        if index:
            for i in ids:
                index.pop(i, None)

    # ---- pause, workers, schedules -------------------------------------------------------

    async def set_paused(self, queue: str, paused: bool) -> None:
        self._known.add(queue)
        if paused:
            self._paused.add(queue)
        else:
            self._paused.discard(queue)

    async def paused(self) -> set[str]:
        return set(self._paused)

    async def beat(self, worker_id: str, record: bytes, ttl: float) -> None:
        self._workers[worker_id] = (time.monotonic() + ttl, record)

    async def leave(self, worker_id: str) -> None:
        self._workers.pop(worker_id, None)

    async def workers(self) -> list[bytes]:
        now = time.monotonic()
        for wid in [w for w, (until, _) in self._workers.items() if until <= now]:
            del self._workers[wid]
        return [record for _, record in self._workers.values()]

    async def note_schedules(self, records: Sequence[tuple[str, bytes]]) -> None:
        self._schedules.update(records)

    async def schedules(self) -> list[tuple[str, bytes]]:
        return list(self._schedules.items())

    async def drop_schedules(self, ids: Sequence[str]) -> None:
        for i in ids:
            self._schedules.pop(i, None)
