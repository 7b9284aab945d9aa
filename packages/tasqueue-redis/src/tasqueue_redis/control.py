"""``RedisControl``: the control plane of a ``RedisBroker`` (``tasqueue.control``), for the Inspector.

Counts are cardinalities (LLEN, ZCARD, ZCOUNT), pages are ranges of sorted sets, so each call
costs O(log n + page) however many jobs are stored. Besides the broker's own keys it keeps
(``tq`` is the prefix)::

    tq:{q}:idx:successful  ZSET  job id -> when it finished (ms); trimmed by age and size
    tq:{q}:idx:failed      ZSET  likewise
    tq:{q}:idx:retrying    ZSET  job id -> when its retry comes due (ms); past entries dropped
    tq:{control}:queues    SET   every queue published to, consumed, paused or indexed
    tq:{control}:paused    SET   paused queues
    tq:{control}:workers   ZSET  worker id -> when its record expires (ms)
    tq:{control}:worker:<id> STRING the worker's record (msgpack, written by the core), with a TTL
    tq:{control}:schedules HASH  schedule id -> its record
    tq:{control}:totals    HASH  "<queue>:successful" / "<queue>:failed" -> jobs ever indexed

Index entries come from workers once per heartbeat, so they trail the job records by about a
second. The ``{control}`` keys share one hash tag, so a Cluster keeps them on one node.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from tasqueue.control import Counts, Finished, JobState, Listed
from tasqueue.errors import BrokerError
from tasqueue_redis import _lua

if TYPE_CHECKING:
    from tasqueue_redis.broker import RedisBroker, _Keys

__all__ = ["INDEX_LIMIT", "RETENTION", "RedisControl"]

log = logging.getLogger("tasqueue.redis")

#: Seconds entries of the successful/failed indexes are kept, and the most each keeps.
RETENTION = 86400.0
INDEX_LIMIT = 100_000

_INDEXED = (JobState.SUCCESSFUL, JobState.FAILED, JobState.RETRYING)


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else value


def _cursor(score: float, member: bytes) -> str:
    return f"{int(score)}|{_text(member)}"


def _parse(cursor: str) -> tuple[int, bytes]:
    score, _, member = cursor.partition("|")
    try:
        return int(score), member.encode("utf-8")
    except ValueError:
        msg = f"not a cursor of this list: {cursor!r}"
        raise ValueError(msg) from None


class RedisControl:
    """``tasqueue.control.ControlPlane`` over one ``RedisBroker``'s keys."""

    def __init__(self, broker: RedisBroker, *, retention: float = RETENTION, index_limit: int = INDEX_LIMIT) -> None:
        self._broker = broker
        self._client = broker.client
        self._exec = broker._exec
        prefix = broker._prefix
        self._prefix = prefix
        base = f"{prefix}:{{control}}:"
        self._queues = base + "queues"
        self._paused = base + "paused"
        self._workers = base + "workers"
        self._worker = base + "worker:"
        self._schedules = base + "schedules"
        self._totals = base + "totals"
        self.retention = retention
        self.index_limit = index_limit

    def _index(self, queue: str, state: JobState) -> str:
        return f"{self._prefix}:{{{queue}}}:idx:{state.value}"

    def _keys(self, queue: str) -> _Keys:
        return self._broker._queue(queue)

    async def _pipe(self, what: str, build: Any) -> list[Any]:
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                build(pipe)
                replies: list[Any] = await pipe.execute()
                return replies
        except RedisError as exc:
            msg = f"could not {what}: {exc}"
            raise BrokerError(msg) from exc

    async def _script(self, what: str, script: _lua.Script, keys: list[str], args: list[Any]) -> Any:
        try:
            return await script(self._client, keys, args, self._exec)
        except RedisError as exc:
            msg = f"could not {what}: {exc}"
            raise BrokerError(msg) from exc

    # ---- reading -------------------------------------------------------------------------

    async def queues(self) -> list[str]:
        (members,) = await self._pipe("list the queues", lambda p: p.smembers(self._queues))
        return sorted(_text(m) for m in members)

    async def counts(self, queues: Sequence[str]) -> list[Counts]:
        if not queues:
            return []
        now = _ms(time.time())

        def build(p: Any) -> None:
            for queue in queues:
                k = self._keys(queue)
                p.llen(k.pending)
                p.zcard(k.delayed)
                p.zcard(k.active)
                p.zcount(self._index(queue, JobState.RETRYING), f"({now}", "+inf")
                p.zcard(self._index(queue, JobState.SUCCESSFUL))
                p.zcard(self._index(queue, JobState.FAILED))
                p.sismember(self._paused, queue)
                p.hmget(self._totals, f"{queue}:successful", f"{queue}:failed")

        replies = await self._pipe("read the queue counts", build)
        out: list[Counts] = []
        for i in range(len(queues)):
            queued, delayed, active, retrying, successful, failed, paused, totals = replies[8 * i : 8 * i + 8]
            out.append(
                Counts(
                    queued=int(queued),
                    delayed=max(int(delayed) - int(retrying), 0),
                    running=int(active),
                    retrying=int(retrying),
                    successful=int(successful),
                    failed=int(failed),
                    paused=bool(paused),
                    total_successful=int(totals[0] or 0),
                    total_failed=int(totals[1] or 0),
                )
            )
        return out

    async def page(
        self, queue: str, state: JobState, *, cursor: str | None, limit: int, newest_first: bool
    ) -> tuple[list[Listed], str | None]:
        k = self._keys(queue)
        if state is JobState.QUEUED:
            return await self._page_list(k, cursor, limit, newest_first)
        now = _ms(time.time())
        if state is JobState.DELAYED:
            key, floor = k.delayed, None
        elif state is JobState.RUNNING:
            key, floor = k.active, None
        else:
            key = self._index(queue, state)
            floor = now if state is JobState.RETRYING else None
        entries, next_cursor = await self._page_zset(key, cursor, limit, newest_first, floor)
        ids = [m for m, _ in entries]
        retry_key = self._index(queue, JobState.RETRYING)

        def build(p: Any) -> None:
            if ids:
                p.hmget(k.data, ids)
                if state is JobState.DELAYED:
                    p.zmscore(retry_key, ids)

        replies = await self._pipe(f"read a page of queue {queue!r}", build) if ids else [[], []]
        datas = replies[0]
        out: list[Listed] = []
        for n, (member, score) in enumerate(entries):
            if state is JobState.DELAYED:
                due = replies[1][n]
                if due is not None and float(due) > now:
                    continue  # waiting out a retry's backoff: listed as retrying
            out.append(Listed(_text(member), score / 1000, datas[n]))
        return out, next_cursor

    async def _page_list(self, k: _Keys, cursor: str | None, limit: int, newest_first: bool) -> tuple[list[Listed], str | None]:
        # The ready list grows at the left (LPUSH) and is consumed from the right (RPOP).
        start = int(cursor) if cursor else 0
        if newest_first:
            lo, hi = start, start + limit
        else:
            lo, hi = -(start + limit + 1), -(start + 1)

        def build(p: Any) -> None:
            p.lrange(k.pending, lo, hi)
            p.llen(k.pending)

        raw, size = await self._pipe("read a page of the ready list", build)
        ids: list[bytes] = list(raw) if newest_first else list(reversed(raw))
        more = len(ids) > limit or start + limit < int(size)
        ids = ids[:limit]
        if not ids:
            return [], None
        (datas,) = await self._pipe("read a page of the ready list", lambda p: p.hmget(k.data, ids))
        return [Listed(_text(i), 0.0, d) for i, d in zip(ids, datas, strict=True)], (str(start + limit) if more else None)

    async def _page_zset(
        self, key: str, cursor: str | None, limit: int, newest_first: bool, floor: int | None
    ) -> tuple[list[tuple[bytes, float]], str | None]:
        """Members after ``cursor`` (score, then member, in the chosen direction), and the next cursor."""
        after: tuple[int, bytes] | None = _parse(cursor) if cursor else None
        lo = f"({floor}" if floor is not None else "-inf"
        hi = "+inf"
        if after is not None:
            if newest_first:
                hi = str(after[0])
            else:
                lo = str(after[0]) if floor is None or after[0] > floor else f"({floor}"

        def build(p: Any) -> None:
            if after is not None:
                p.zcount(key, after[0], after[0])
            else:
                p.echo(b"0")

        (ties,) = await self._pipe("read a sorted index", build)
        want = limit + 1 + int(ties)
        try:
            if newest_first:
                raw = await self._exec("ZRANGE", key, hi, lo, "BYSCORE", "REV", "LIMIT", 0, want, "WITHSCORES")
            else:
                raw = await self._exec("ZRANGE", key, lo, hi, "BYSCORE", "LIMIT", 0, want, "WITHSCORES")
        except RedisError as exc:
            msg = f"could not read a sorted index: {exc}"
            raise BrokerError(msg) from exc
        if raw and isinstance(raw[0], list):  # RESP3 answers [member, score] pairs
            pairs = [(m, float(sc)) for m, sc in raw]
        else:
            pairs = [(raw[i], float(raw[i + 1])) for i in range(0, len(raw), 2)]
        if after is not None:
            s0, m0 = after
            if newest_first:
                pairs = [(m, s) for m, s in pairs if s < s0 or (s == s0 and m < m0)]
            else:
                pairs = [(m, s) for m, s in pairs if s > s0 or (s == s0 and m > m0)]
        more = len(pairs) > limit
        pairs = pairs[:limit]
        return pairs, (_cursor(pairs[-1][1], pairs[-1][0]) if more and pairs else None)

    # ---- acting on messages --------------------------------------------------------------

    async def held(self, queue: str, ids: Sequence[str]) -> list[str]:
        if not ids:
            return []
        k = self._keys(queue)
        (found,) = await self._pipe(f"read jobs of queue {queue!r}", lambda p: p.hmget(k.data, list(ids)))
        return [i for i, d in zip(ids, found, strict=True) if d is not None]

    async def remove(self, queue: str, ids: Sequence[str]) -> list[str]:
        if not ids:
            return []
        k = self._keys(queue)
        keys = [k.pending, k.delayed, k.active, k.data, k.meta]
        removed: list[str] = []
        for start in range(0, len(ids), 500):
            part = list(ids[start : start + 500])
            removed += [_text(i) for i in await self._script(f"delete jobs of queue {queue!r}", _lua.CONTROL_REMOVE, keys, part)]
        return removed

    async def remove_all(self, queue: str, state: JobState, limit: int) -> list[str]:
        if state is JobState.QUEUED:
            k = self._keys(queue)
            ids = await self._script(f"purge queue {queue!r}", _lua.CONTROL_DRAIN, [k.pending, k.data, k.meta], [limit])
            return [_text(i) for i in ids]
        if state not in (JobState.DELAYED, JobState.RETRYING):
            msg = f"remove_all takes queued, delayed or retrying, not {state.value!r}"
            raise ValueError(msg)
        cursor: str | None = None
        while True:
            listed, cursor = await self.page(queue, state, cursor=cursor, limit=limit, newest_first=False)
            if listed:
                return await self.remove(queue, [e.id for e in listed])
            if cursor is None:
                return []

    async def promote(self, queue: str, ids: Sequence[str]) -> list[str]:
        if not ids:
            return []
        k = self._keys(queue)
        moved = await self._script(
            f"run jobs of queue {queue!r} now", _lua.CONTROL_PROMOTE, [k.pending, k.delayed, k.wake], list(ids)
        )
        return [_text(i) for i in moved]

    # ---- indexes -------------------------------------------------------------------------

    async def record(self, entries: Sequence[Finished]) -> None:
        if not entries:
            return
        # A busy worker sends a thousand entries at a time: ZADD's (score, member) pairs are built
        # as one flat list per index, with nothing made per entry.
        by_key: dict[tuple[str, str], list[Any]] = {}
        for e in entries:
            pairs = by_key.get((e.queue, e.state))
            if pairs is None:
                pairs = by_key[(e.queue, e.state)] = []
            pairs += (int(e.at * 1000), e.id)
        now = _ms(time.time())
        cutoff = now - _ms(self.retention)

        commands: list[tuple[Any, ...]] = [("SADD", self._queues, *{q for q, _ in by_key})]
        for (queue, value), pairs in by_key.items():
            state = JobState(value)
            key = self._index(queue, state)
            members = pairs[1::2]
            commands.append(("ZADD", key, *pairs))
            if state is JobState.RETRYING:
                commands.append(("ZREMRANGEBYSCORE", key, "-inf", now))
                continue
            # Counted by entries sent, so a replayed beat may count a job twice: rates, not ledgers.
            commands.append(("HINCRBY", self._totals, f"{queue}:{state.value}", len(members)))
            # A job that finished is no longer waiting to be retried.
            commands.append(("ZREM", self._index(queue, JobState.RETRYING), *members))
            commands.append(("ZREMRANGEBYSCORE", key, "-inf", f"({cutoff}"))
            commands.append(("ZREMRANGEBYRANK", key, 0, -(self.index_limit + 1)))
        lanes = self._broker._lanes
        if lanes is None:  # a Cluster: the keys live on several nodes
            await self._pipe("record finished jobs", lambda p: [p.execute_command(*c) for c in commands])
            return
        # The worker sends this every few batches: the lean path packs it in one go.
        try:
            replies = await lanes.execute_many(*commands)
        except RedisError as exc:
            msg = f"could not record finished jobs: {exc}"
            raise BrokerError(msg) from exc
        for reply in replies:
            if isinstance(reply, Exception):
                msg = f"could not record finished jobs: {reply}"
                raise BrokerError(msg) from reply

    async def forget(self, queue: str, state: JobState, ids: Sequence[str]) -> None:
        if ids:
            await self._pipe("update an index", lambda p: p.zrem(self._index(queue, JobState(state)), *ids))

    # ---- pause, workers, schedules -------------------------------------------------------

    async def set_paused(self, queue: str, paused: bool) -> None:
        def build(p: Any) -> None:
            p.sadd(self._queues, queue)
            if paused:
                p.sadd(self._paused, queue)
            else:
                p.srem(self._paused, queue)

        await self._pipe(f"{'pause' if paused else 'resume'} queue {queue!r}", build)

    async def paused(self) -> set[str]:
        (members,) = await self._pipe("read the paused queues", lambda p: p.smembers(self._paused))
        return {_text(m) for m in members}

    async def beat(self, worker_id: str, record: bytes, ttl: float) -> None:
        until = _ms(time.time() + ttl)

        def build(p: Any) -> None:
            p.set(self._worker + worker_id, record, px=max(_ms(ttl), 1))
            p.zadd(self._workers, {worker_id: until})

        await self._pipe("store this worker's heartbeat", build)

    async def leave(self, worker_id: str) -> None:
        def build(p: Any) -> None:
            p.delete(self._worker + worker_id)
            p.zrem(self._workers, worker_id)

        await self._pipe("remove this worker's record", build)

    async def workers(self) -> list[bytes]:
        now = _ms(time.time())

        def build(p: Any) -> None:
            p.zremrangebyscore(self._workers, "-inf", now)
            p.zrange(self._workers, 0, -1)

        _, ids = await self._pipe("list the workers", build)
        if not ids:
            return []
        (records,) = await self._pipe("read the workers", lambda p: p.mget([self._worker + _text(i) for i in ids]))
        return [r for r in records if r is not None]

    async def note_schedules(self, records: Sequence[tuple[str, bytes]]) -> None:
        if records:
            await self._pipe("record schedules", lambda p: p.hset(self._schedules, mapping=dict(records)))

    async def schedules(self) -> list[tuple[str, bytes]]:
        (found,) = await self._pipe("read the schedules", lambda p: p.hgetall(self._schedules))
        return [(_text(k), v) for k, v in found.items()]

    async def drop_schedules(self, ids: Sequence[str]) -> None:
        if ids:
            await self._pipe("forget schedules", lambda p: p.hdel(self._schedules, *ids))

    async def register(self, queue: str) -> None:
        """Add ``queue`` to the set of known queues (the broker does so once per queue and process).

        Best effort: a queue missed here shows up once a worker consumes it or indexes a job of it.
        """
        try:
            await self._exec("SADD", self._queues, queue)
        except RedisError:
            log.debug("could not register queue %r for inspection", queue, exc_info=True)
