"""The control plane of the JetStream broker: what the ``Inspector`` reads and changes.

Counts come from what JetStream keeps: the ``work`` consumer's ``num_pending`` (queued) and
``num_ack_pending`` (running), the size of the delayed subject, and per-queue indexes whose
sizes a short-lived consumer reports without reading a message. Under prefix ``P``:

* stream ``P_control`` (one message per subject, no age limit): ``P.c.queue.<q>`` (the queue
  names), ``P.c.paused.<q>``, ``P.c.worker.<w>`` (records, with their expiry in a header),
  ``P.c.sched.<s>``, and ``P.c.total.<q>.<state>`` (ever-growing counters, compare-and-set);
* stream ``P_index`` (one message per subject, ``max_age`` = ``RETENTION``):
  ``P.i.<q>.<state>.<id>`` for finished and retrying jobs, in the order they were recorded.

Pages walk stream sequences, so a cursor is a sequence and pages are stable under concurrent
changes. Reading backwards (newest first) has no JetStream call: it reads forward over a
window of sequences that grows until the page is full.

Acting on one job by id (``held``, ``remove``, ``promote``) looks the id up among the queue's
messages, at most ``SCAN_LIMIT`` of them: a WorkQueue stream has no index by job id.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from nats.aio.msg import Msg

from tasqueue.control import Counts, Finished, JobState, Listed
from tasqueue.errors import BrokerError, TasqueueError
from tasqueue_nats._client import WRONG_LAST_SEQUENCE, ApiError, Request, check, token

if TYPE_CHECKING:
    from tasqueue_nats.broker import NatsBroker, _Queue

__all__ = ["RETENTION", "SCAN_LIMIT", "NatsControl"]

#: Seconds index entries (finished jobs per queue) are kept.
RETENTION = 86400.0
#: Messages of one queue looked through to find jobs by id.
SCAN_LIMIT = 10_000
_ID = "Tq-Id"
_AT = "Tq-At"
_UNTIL = "Tq-Until"
_DUE = "Tq-Due"
_EXPECT = "Nats-Expected-Last-Subject-Sequence"
_ROUNDS = 32
_BATCH = 256  # direct gets in flight while reading forward
_INDEXED = (JobState.RETRYING, JobState.SUCCESSFUL, JobState.FAILED)


def _job_id(msg: Msg) -> str:
    headers = msg.headers or {}
    return headers.get(_ID) or headers.get("Nats-Msg-Id", "")


def _seq(msg: Msg) -> int:
    return int((msg.headers or {})["Nats-Sequence"])


def _last(stream: str, subject: str) -> Request:
    return Request(f"$JS.API.DIRECT.GET.{stream}", json.dumps({"last_by_subj": subject}).encode())


def _cursor(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    try:
        return int(cursor)
    except ValueError:
        msg = f"not a cursor of this list: {cursor!r}"
        raise ValueError(msg) from None


class NatsControl:
    """``tasqueue.control.ControlPlane`` for one ``NatsBroker``."""

    def __init__(self, broker: NatsBroker, prefix: str) -> None:
        self._broker = broker
        self._client = broker.client
        self._prefix = prefix
        self._control = f"{prefix}_control"
        self._index = f"{prefix}_index"
        self._ready = False
        self._lock = asyncio.Lock()
        self._counted: set[str] = set()  # queues whose "count" consumer this process made sure of

    # ---- setup ---------------------------------------------------------------------------

    async def _setup(self) -> None:
        if self._ready:
            return
        async with self._lock:
            if self._ready:
                return  # type: ignore[unreachable]  # another task finished it while this one waited
            conn = self._broker._conn
            base = {
                "retention": "limits",
                "storage": conn.storage,
                "num_replicas": conn.replicas,
                "max_msgs_per_subject": 1,
                "allow_direct": True,
                "discard": "old",
            }
            for name, subject, age in (
                (self._control, f"{self._prefix}.c.>", 0),
                (self._index, f"{self._prefix}.i.>", int(RETENTION * 1e9)),
            ):
                config = {**base, "name": name, "subjects": [subject], "max_age": age}
                try:
                    await self._client.api(f"STREAM.CREATE.{name}", config)
                except ApiError as exc:
                    if "already in use" not in str(exc):
                        raise BrokerError(f"cannot create stream {name!r}: {exc}") from None
            self._ready = True

    def _c(self, kind: str, name: str) -> str:
        return f"{self._prefix}.c.{kind}.{token(name)}"

    def _i(self, queue: str, state: JobState, job_id: str = "*") -> str:
        return f"{self._prefix}.i.{token(queue)}.{state.value}.{job_id if job_id == '*' else token(job_id)}"

    async def _send(self, requests: list[Request]) -> None:
        if not requests:
            return
        await self._setup()
        await self._client.send(requests)
        for r in requests:
            try:
                check(r)
            except ApiError as exc:
                raise BrokerError(f"NATS did not store {r.subject!r}: {exc}") from None

    def _purge(self, stream: str, subject: str) -> Request:
        return Request(f"$JS.API.STREAM.PURGE.{stream}", json.dumps({"filter": subject}).encode())

    async def note_queue(self, queue: str) -> None:
        """Remember a queue's name (its stream's name is a token of it, not the name itself)."""
        await self._send([Request(self._c("queue", queue), queue.encode())])

    # ---- reading streams -----------------------------------------------------------------

    async def _consumer(self, stream: str, subject: str, **config: Any) -> dict[str, Any]:
        body = {
            "stream_name": stream,
            "config": {
                "ack_policy": "none",
                "filter_subject": subject,
                "inactive_threshold": 10_000_000_000,
                "mem_storage": True,
                "num_replicas": 1,
                "max_waiting": 1,
                **config,
            },
        }
        try:
            return await self._client.api(f"CONSUMER.CREATE.{stream}", body)
        except TasqueueError as exc:
            raise BrokerError(f"cannot read {subject!r}: {exc}") from None

    async def _drop_consumer(self, stream: str, name: str) -> None:
        # If this fails, it goes away by itself after its inactive_threshold.
        with contextlib.suppress(TasqueueError):
            await self._client.api(f"CONSUMER.DELETE.{stream}.{name}")

    async def _size(self, stream: str, subject: str) -> int:
        """How many messages ``stream`` holds on ``subject``, as a consumer created on it reports."""
        await self._setup()
        info = await self._consumer(stream, subject, deliver_policy="all")
        await self._drop_consumer(stream, info["name"])
        return int(info["num_pending"])

    async def _last_each(self, subject: str) -> list[Msg]:
        """The last message of each subject matching ``subject`` in the control stream."""
        await self._setup()
        info = await self._consumer(self._control, subject, deliver_policy="last_per_subject")
        name, count = info["name"], int(info["num_pending"])
        out: list[Msg] = []
        try:
            if count:
                nc = await self._client.ready()
                inbox = nc.new_inbox()
                sub = await nc.subscribe(inbox)
                try:
                    body = json.dumps({"batch": count, "no_wait": True}).encode()
                    await nc.publish(f"$JS.API.CONSUMER.MSG.NEXT.{self._control}.{name}", body, reply=inbox)
                    while len(out) < count:
                        msg = await sub.next_msg(timeout=self._client.timeout)
                        if msg.headers and "Status" in msg.headers:
                            break
                        out.append(msg)
                except TimeoutError:
                    raise BrokerError(f"reading {subject!r} timed out") from None
                finally:
                    await sub.unsubscribe()
        finally:
            await self._drop_consumer(self._control, name)
        return out

    async def _forward(self, stream: str, subject: str, first: int, limit: int, below: int | None = None) -> list[Msg]:
        """Messages on ``subject`` from sequence ``first`` on (and below ``below``), oldest first.

        Direct gets go out in batches, one per sequence from where the last batch ended; each
        answers the first message at or after its sequence, so that a batch covers every match
        up to the furthest one it found, in one round trip (duplicates are dropped).
        """
        out: list[Msg] = []
        seq = first
        while len(out) < limit:
            want = limit - len(out) if below is None else min(limit - len(out), below - seq)
            batch = min(_BATCH, max(want, 1))
            requests = [
                Request(f"$JS.API.DIRECT.GET.{stream}", json.dumps({"seq": n, "next_by_subj": subject}).encode())
                for n in range(seq, seq + batch)
            ]
            await self._client.send(requests)
            found: dict[int, Msg] = {}
            for r in requests:
                assert r.reply is not None
                if "Status" not in (r.reply.headers or {}):
                    found.setdefault(_seq(r.reply), r.reply)
            if not found:
                break
            for n in sorted(found):
                if (below is not None and n >= below) or len(out) >= limit:
                    return out
                out.append(found[n])
            last = requests[-1].reply
            if last is not None and "Status" in (last.headers or {}):
                break  # nothing at or after the batch's last sequence: the subject ends here
            seq = max(found) + 1
        return out

    async def _backward(self, stream: str, subject: str, floor: int, below: int, limit: int) -> list[Msg]:
        """Up to ``limit`` messages on ``subject`` in ``[floor, below)``, newest first."""
        window = max(limit * 4, 64)
        while True:
            start = max(floor, below - window)
            found = await self._forward(stream, subject, start, SCAN_LIMIT, below)
            if len(found) >= limit or start <= floor:
                return found[::-1][:limit]
            window *= 4

    async def _bounds(self, stream: str) -> tuple[int, int]:
        info = await self._client.api(f"STREAM.INFO.{stream}")
        state = info["state"]
        return int(state["first_seq"]), int(state["last_seq"])

    async def _page(
        self, stream: str, subject: str, *, floor: int, ceiling: int | None, cursor: str | None, limit: int, newest_first: bool
    ) -> tuple[list[Msg], str | None]:
        """A page of the messages on ``subject`` with sequences in ``[floor, ceiling)``; the cursor is a sequence."""
        at = _cursor(cursor)
        if newest_first:
            if ceiling is None:
                _, last = await self._bounds(stream)
                ceiling = last + 1
            below = ceiling if at is None else min(at, ceiling)
            msgs = await self._backward(stream, subject, floor, below, limit + 1)
        else:
            start = max(floor, at + 1) if at is not None else floor
            msgs = await self._forward(stream, subject, start, limit + 1, ceiling)
        more = len(msgs) > limit
        msgs = msgs[:limit]
        return msgs, (str(_seq(msgs[-1])) if more and msgs else None)

    # ---- the queue's messages ------------------------------------------------------------

    async def _q(self, queue: str) -> _Queue:
        return await self._broker._ready(queue)

    async def _later(self, q: _Queue) -> str:
        """The subject(s) delayed messages of ``q`` wait on."""
        return q.holders + ".*" if await self._broker._native_schedules() else q.delayed

    async def _work_info(self, q: _Queue) -> dict[str, Any]:
        try:
            return await self._client.api(f"CONSUMER.INFO.{q.stream}.work")
        except ApiError as exc:
            raise BrokerError(f"cannot read queue {q.name!r}: {exc}") from None

    async def _delayed_size(self, q: _Queue) -> int:
        if await self._broker._native_schedules():
            # A durable consumer that is never pulled: its pending count is the holders' number.
            config = {
                "durable_name": "count",
                "filter_subject": q.holders + ".*",
                "ack_policy": "explicit",
                "deliver_policy": "all",
                "max_ack_pending": 1,
            }
            if q.name not in self._counted:
                await self._broker._ensure_consumer(q.stream, config)
                self._counted.add(q.name)
            info = await self._client.api(f"CONSUMER.INFO.{q.stream}.count")
            return int(info["num_pending"])
        info = await self._client.api(f"CONSUMER.INFO.{q.stream}.delay")
        return int(info["num_pending"]) + int(info["num_ack_pending"])

    async def _waiting(self, q: _Queue, ids: set[str]) -> list[Msg]:
        """The waiting (queued or delayed) messages of ``q`` carrying one of ``ids``."""
        delivered = int((await self._work_info(q))["delivered"]["stream_seq"])
        ready = await self._forward(q.stream, q.work, delivered + 1, SCAN_LIMIT)
        later = await self._forward(q.stream, await self._later(q), 1, SCAN_LIMIT)
        return [m for m in ready + later if _job_id(m) in ids]

    async def _delete(self, q: _Queue, msgs: Sequence[Msg]) -> list[str]:
        requests = [
            Request(f"$JS.API.STREAM.MSG.DELETE.{q.stream}", json.dumps({"seq": _seq(m), "no_erase": True}).encode())
            for m in msgs
        ]
        await self._client.send(requests)
        gone: list[str] = []
        for m, r in zip(msgs, requests, strict=True):
            with contextlib.suppress(ApiError):  # already gone: taken by a worker, or fired
                if check(r).get("success"):
                    gone.append(_job_id(m))
        return gone

    async def _retry_ids(self, queue: str, ids: Sequence[str]) -> set[str]:
        """Those of ``ids`` the retrying index holds."""
        await self._setup()
        requests = [_last(self._index, self._i(queue, JobState.RETRYING, i)) for i in ids]
        await self._client.send(requests)
        return {i for i, r in zip(ids, requests, strict=True) if r.reply is not None and "Status" not in (r.reply.headers or {})}

    # ---- reading -------------------------------------------------------------------------

    async def queues(self) -> list[str]:
        names = {m.data.decode() for m in await self._last_each(f"{self._prefix}.c.queue.*")}
        return sorted(names | await self.paused())

    async def counts(self, queues: Sequence[str]) -> list[Counts]:
        paused = await self.paused()
        out: list[Counts] = []
        for queue in queues:
            q = await self._q(queue)
            work = await self._work_info(q)
            delayed = await self._delayed_size(q)
            retrying = await self._size(self._index, self._i(queue, JobState.RETRYING))
            totals = await self._totals(queue)
            out.append(
                Counts(
                    queued=int(work["num_pending"]),
                    delayed=max(delayed - retrying, 0),
                    running=int(work["num_ack_pending"]),
                    retrying=retrying,
                    successful=await self._size(self._index, self._i(queue, JobState.SUCCESSFUL)),
                    failed=await self._size(self._index, self._i(queue, JobState.FAILED)),
                    paused=queue in paused,
                    total_successful=totals[JobState.SUCCESSFUL][0],
                    total_failed=totals[JobState.FAILED][0],
                )
            )
        return out

    async def page(
        self, queue: str, state: JobState, *, cursor: str | None, limit: int, newest_first: bool
    ) -> tuple[list[Listed], str | None]:
        if state in _INDEXED:
            await self._setup()
            first, _ = await self._bounds(self._index)
            subject = self._i(queue, state)
            msgs, nxt = await self._page(
                self._index, subject, floor=first, ceiling=None, cursor=cursor, limit=limit, newest_first=newest_first
            )
            return [Listed(_job_id(m), float((m.headers or {}).get(_AT, 0.0))) for m in msgs], nxt
        q = await self._q(queue)
        if state is JobState.DELAYED:
            subject = await self._later(q)
            listed: list[Listed] = []
            at = cursor
            # Retries wait among the delayed messages; they are listed as retrying.
            while True:
                msgs, nxt = await self._page(
                    q.stream, subject, floor=1, ceiling=None, cursor=at, limit=limit - len(listed), newest_first=newest_first
                )
                retries = await self._retry_ids(queue, [_job_id(m) for m in msgs])
                for m in msgs:
                    if _job_id(m) not in retries:
                        due = int((m.headers or {}).get(_DUE, "0")) / 1000
                        listed.append(Listed(_job_id(m), due, bytes(m.data)))
                if nxt is None or len(listed) >= limit:
                    return listed, nxt
                at = nxt
        delivered = int((await self._work_info(q))["delivered"]["stream_seq"])
        # Queued: not yet delivered. Running: delivered, not yet acked (a WorkQueue stream drops what is acked).
        floor, ceiling = (delivered + 1, None) if state is JobState.QUEUED else (1, delivered + 1)
        msgs, nxt = await self._page(
            q.stream, q.work, floor=floor, ceiling=ceiling, cursor=cursor, limit=limit, newest_first=newest_first
        )
        return [Listed(_job_id(m), 0.0, bytes(m.data)) for m in msgs], nxt

    # ---- acting on messages --------------------------------------------------------------

    async def held(self, queue: str, ids: Sequence[str]) -> list[str]:
        q = await self._q(queue)
        wanted = set(ids)
        # Waiting, delayed, or delivered and not yet acked: every message the stream still has.
        found = {_job_id(m) for m in await self._forward(q.stream, q.work[:-1] + ">", 1, SCAN_LIMIT)} & wanted
        return [i for i in ids if i in found]

    async def remove(self, queue: str, ids: Sequence[str]) -> list[str]:
        q = await self._q(queue)
        return await self._delete(q, await self._waiting(q, set(ids)))

    async def remove_all(self, queue: str, state: JobState, limit: int) -> list[str]:
        if state not in (JobState.QUEUED, JobState.DELAYED, JobState.RETRYING):
            msg = f"remove_all takes queued, delayed or retrying, not {state.value!r}"
            raise ValueError(msg)
        q = await self._q(queue)
        if state is JobState.QUEUED:
            delivered = int((await self._work_info(q))["delivered"]["stream_seq"])
            msgs = await self._forward(q.stream, q.work, delivered + 1, limit)
        else:
            later = await self._forward(q.stream, await self._later(q), 1, SCAN_LIMIT)
            retries = await self._retry_ids(queue, [_job_id(m) for m in later])
            msgs = [m for m in later if (_job_id(m) in retries) == (state is JobState.RETRYING)][:limit]
        return await self._delete(q, msgs)

    async def promote(self, queue: str, ids: Sequence[str]) -> list[str]:
        q = await self._q(queue)
        later = set(ids)
        msgs = [m for m in await self._forward(q.stream, await self._later(q), 1, SCAN_LIMIT) if _job_id(m) in later]
        if not msgs:
            return []
        native = await self._broker._native_schedules()
        # Ready copies first (their ids derived from the delayed message: a repeat is a duplicate), then the delayed ones go.
        copies = [
            self._broker._publication(q, _job_id(m), bytes(m.data), 0, msg_id=f"{_job_id(m)}@now{_seq(m)}", native=native)
            for m in msgs
        ]
        await self._broker._publish(q, copies)
        await self._delete(q, msgs)
        return [_job_id(m) for m in msgs]

    # ---- indexes -------------------------------------------------------------------------

    async def record(self, entries: Sequence[Finished]) -> None:
        if not entries:
            return
        requests: list[Request] = []
        added: dict[tuple[str, JobState], int] = {}
        for e in entries:
            state = JobState(e.state)
            requests.append(Request(self._i(e.queue, state, e.id), e.id.encode(), {_ID: e.id, _AT: repr(e.at)}))
            if state is not JobState.RETRYING:
                # A job that finished is no longer waiting to be retried.
                requests.append(self._purge(self._index, self._i(e.queue, JobState.RETRYING, e.id)))
                added[(e.queue, state)] = added.get((e.queue, state), 0) + 1
        for queue in {e.queue for e in entries}:
            requests.append(Request(self._c("queue", queue), queue.encode()))
        await self._send(requests)
        for (queue, state), n in added.items():
            await self._add(queue, state, n)

    def _total(self, queue: str, state: JobState) -> str:
        return f"{self._prefix}.c.total.{token(queue)}.{state.value}"

    async def _totals(self, queue: str) -> dict[JobState, tuple[int, int]]:
        """``(count, sequence)`` of each counter of ``queue``."""
        await self._setup()
        states = (JobState.SUCCESSFUL, JobState.FAILED)
        requests = [_last(self._control, self._total(queue, s)) for s in states]
        await self._client.send(requests)
        out: dict[JobState, tuple[int, int]] = {}
        for s, r in zip(states, requests, strict=True):
            assert r.reply is not None
            headers = r.reply.headers or {}
            out[s] = (0, 0) if "Status" in headers else (int(r.reply.data), int(headers["Nats-Sequence"]))
        return out

    async def _add(self, queue: str, state: JobState, n: int) -> None:
        for _ in range(_ROUNDS):
            count, seq = (await self._totals(queue))[state]
            r = Request(self._total(queue, state), str(count + n).encode(), {_EXPECT: str(seq)})
            await self._client.send([r])
            try:
                check(r)
                return
            except ApiError as exc:
                if exc.code != WRONG_LAST_SEQUENCE:
                    raise BrokerError(f"NATS did not store a counter of queue {queue!r}: {exc}") from None
        raise BrokerError(f"gave up counting finished jobs of queue {queue!r} after {_ROUNDS} concurrent writes")

    async def forget(self, queue: str, state: JobState, ids: Sequence[str]) -> None:
        await self._send([self._purge(self._index, self._i(queue, JobState(state), i)) for i in ids])

    # ---- pause, workers, schedules -------------------------------------------------------

    async def set_paused(self, queue: str, paused: bool) -> None:
        await self.note_queue(queue)
        subject = self._c("paused", queue)
        await self._send([Request(subject, queue.encode()) if paused else self._purge(self._control, subject)])

    async def paused(self) -> set[str]:
        return {m.data.decode() for m in await self._last_each(f"{self._prefix}.c.paused.*")}

    async def beat(self, worker_id: str, record: bytes, ttl: float) -> None:
        await self._send([Request(self._c("worker", worker_id), record, {_UNTIL: repr(time.time() + ttl)})])

    async def leave(self, worker_id: str) -> None:
        await self._send([self._purge(self._control, self._c("worker", worker_id))])

    async def workers(self) -> list[bytes]:
        now = time.time()
        return [
            bytes(m.data)
            for m in await self._last_each(f"{self._prefix}.c.worker.*")
            if float((m.headers or {}).get(_UNTIL, "0")) > now
        ]

    async def note_schedules(self, records: Sequence[tuple[str, bytes]]) -> None:
        await self._send([Request(self._c("sched", sid), record, {_ID: sid}) for sid, record in records])

    async def schedules(self) -> list[tuple[str, bytes]]:
        return [(_job_id(m), bytes(m.data)) for m in await self._last_each(f"{self._prefix}.c.sched.*")]

    async def drop_schedules(self, ids: Sequence[str]) -> None:
        await self._send([self._purge(self._control, self._c("sched", i)) for i in ids])
