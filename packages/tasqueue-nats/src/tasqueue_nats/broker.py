"""The JetStream broker: one WorkQueue stream per queue, one durable pull consumer shared by its workers.

Layout for queue ``q`` under prefix ``P`` (``t`` is ``q`` made a safe token, see ``token``):

* stream ``P_q_t``, WorkQueue retention, file storage by default, subjects
  ``P.q.t.w`` (jobs ready to run), ``P.q.t.d`` (delayed jobs, on servers without message
  schedules) and ``P.q.t.s.*`` (schedule holders, on servers with them);
* durable consumer ``work`` on ``P.q.t.w``: explicit acks, ``ack_wait`` = ``visibility_timeout``,
  no redelivery limit (the core parks a job whose workers keep dying, from the delivery count);
* durable consumer ``delay`` on ``P.q.t.d`` (servers before 2.12 only): see ``_promote``.

Leases. JetStream's lease is the consumer's ack wait, renewed with ``+WPI`` (``in_progress``).
The server accepts an ack from any holder, even one whose lease ran out long ago, so fencing
is done here: each delivery carries a deadline on this process's clock that is never later than
the server's (counted from when the fetch or the last renewal was *sent*), and ``ack``,
``nack`` and ``extend`` act only before it. A worker that stalled past its lease therefore never
acks away the redelivery another worker is running.

Delayed messages. On servers with message schedules (2.12+) a delayed message is a schedule
holder (``Nats-Schedule: @at …``) that the server itself turns into a ready message when due.
On older servers (Debian's 2.9) it waits on ``P.q.t.d``, and every broker that fetches from the
queue runs a promoter: it pulls delayed messages from the ``delay`` consumer, gives back those
not yet due with ``nak(delay=…)`` (the server's timer wakes it when they are), and publishes due
ones as ready. Promoters racing publish one message: the publish carries a ``Nats-Msg-Id``
derived from the delayed message's stream sequence.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from nats.aio.msg import Msg

from tasqueue.broker import PENDING_LIMIT, Delivery, Envelope
from tasqueue.errors import BrokerError, ConfigurationError
from tasqueue_nats._client import (
    STREAM_NOT_FOUND,
    ApiError,
    Client,
    Request,
    check,
    token,
)
from tasqueue_nats._config import Connection, parse_url
from tasqueue_nats.control import NatsControl

__all__ = ["NatsBroker"]

log = logging.getLogger("tasqueue.nats")

DEFAULT_VISIBILITY_TIMEOUT = 30.0
DEFAULT_DUPLICATE_WINDOW = 120.0
DEFAULT_MAX_ACK_PENDING = 20_000
_MSG_ID = "Nats-Msg-Id"
_ID = "Tq-Id"  # the job id, when the Nats-Msg-Id is not it (a republished message)
_DUE = "Tq-Due"  # ms since the epoch, on delayed messages
_PROMOTE_WAIT = 1.0  # seconds a promoter's pull waits


class _Lease:
    """A delivery's receipt: where to settle it and until when this process may."""

    __slots__ = ("deadline", "reply", "seq", "settled")

    def __init__(self, reply: str, seq: int, deadline: float) -> None:
        self.reply = reply
        self.seq = seq
        self.deadline = deadline
        self.settled = False


class _Queue:
    """What one broker knows about one queue: names, and the state of its fetches."""

    def __init__(self, prefix: str, name: str) -> None:
        t = token(name)
        self.name = name
        self.stream = f"{prefix}_q_{t}"
        self.work = f"{prefix}.q.{t}.w"
        self.delayed = f"{prefix}.q.{t}.d"
        self.holders = f"{prefix}.q.{t}.s"
        self.ready = False
        self.lock = asyncio.Lock()
        self.inbox = ""
        self.arrived: deque[tuple[Msg, float]] = deque()  # (message, lease deadline)
        self.current = ""  # the reply subject of the pull request being waited on
        self.lingering = False
        self.finished = asyncio.Event()  # the current request ended (status, or batch filled)
        self.count = 0
        self.wanted = 0
        self.sent_at = 0.0
        self.stale_until = 0.0
        self.promoter: asyncio.Task[None] | None = None
        self.sub: Any = None  # the subscription of the queue's pull requests


class NatsBroker:
    """A tasqueue broker on NATS JetStream.

    Args:
        url: ``nats://host:4222`` or ``tls://host:4222``, with options as query parameters.
        visibility_timeout: Seconds a fetched job stays leased without a heartbeat: the
            consumer's ack wait, after which a dead worker's job is delivered again.
        schedules: How delayed jobs wait: ``native`` (server message schedules, 2.12+),
            ``stream`` (a delayed subject and a promoter in each worker), or ``auto`` (native
            where the server has it).
        duplicate_window: Seconds JetStream remembers a message id, so that an enqueue
            repeated within it is not stored twice.
        max_ack_pending: Deliveries in flight per queue before the server stops handing out more.
        prefix, replicas, storage, and the connection options: see ``tasqueue_nats._config``.
    """

    def __init__(
        self,
        url: str = "nats://127.0.0.1:4222",
        *,
        visibility_timeout: float | None = None,
        schedules: str | None = None,
        duplicate_window: float | None = None,
        max_ack_pending: int | None = None,
        **options: Any,
    ) -> None:
        given = {
            "visibility_timeout": visibility_timeout,
            "schedules": schedules,
            "duplicate_window": duplicate_window,
            "max_ack_pending": max_ack_pending,
        }
        # Arguments win over the URL's query parameters.
        conn, own = parse_url(url, "broker", {**options, **{k: v for k, v in given.items() if v is not None}})
        self._vt = float(own.get("visibility_timeout", DEFAULT_VISIBILITY_TIMEOUT))
        if self._vt <= 0:
            msg = f"visibility_timeout must be > 0 seconds, got {self._vt}"
            raise ConfigurationError(msg)
        self._schedules = own.get("schedules", "auto")
        self._window = float(own.get("duplicate_window", DEFAULT_DUPLICATE_WINDOW))
        self._max_ack_pending = int(own.get("max_ack_pending", DEFAULT_MAX_ACK_PENDING))
        self._conn: Connection = conn
        self._client = Client(conn)
        self._queues: dict[str, _Queue] = {}
        self._native: bool | None = None
        self._closed = False
        self._requests = 0
        self._control: NatsControl | None = None

    @classmethod
    def from_url(cls, url: str, **options: Any) -> NatsBroker:
        return cls(url, **options)

    @property
    def visibility_timeout(self) -> float:
        return self._vt

    @property
    def client(self) -> Client:
        return self._client

    @property
    def control(self) -> NatsControl:
        """The control plane the ``Inspector`` uses (``tasqueue.control.ControlPlane``)."""
        if self._control is None:
            self._control = NatsControl(self, self._conn.prefix)
        return self._control

    # ---- setup ---------------------------------------------------------------------------

    def _queue(self, name: str) -> _Queue:
        q = self._queues.get(name)
        if q is None:
            q = self._queues[name] = _Queue(self._conn.prefix, name)
        return q

    async def _native_schedules(self) -> bool:
        if self._native is None:
            await self._client.nc()
            has = self._client.version >= (2, 12, 0)
            if self._schedules == "native" and not has:
                v = ".".join(map(str, self._client.version))
                msg = f"schedules=native needs nats-server 2.12 or newer; this one is {v} (use schedules=auto)"
                raise ConfigurationError(msg)
            self._native = has and self._schedules != "stream"
        return self._native

    async def _ready(self, name: str) -> _Queue:
        q = self._queue(name)
        if not q.ready:
            await self._create(q)
            await self.control.note_queue(name)
            q.ready = True
        return q

    async def _create(self, q: _Queue) -> None:
        native = await self._native_schedules()
        config: dict[str, Any] = {
            "name": q.stream,
            "subjects": [q.work, q.delayed, q.holders + ".*"],
            "retention": "workqueue",
            "storage": self._conn.storage,
            "num_replicas": self._conn.replicas,
            "duplicate_window": int(self._window * 1e9),
            "allow_direct": True,
        }
        if native:
            config["allow_msg_schedules"] = True
        await self._ensure_stream(config)
        await self._ensure_consumer(
            q.stream,
            {
                "durable_name": "work",
                "filter_subject": q.work,
                "ack_policy": "explicit",
                "ack_wait": int(self._vt * 1e9),
                "max_deliver": -1,
                "max_ack_pending": self._max_ack_pending,
                "max_waiting": 4096,
                "deliver_policy": "all",
                "replay_policy": "instant",
                "num_replicas": 0,
            },
        )
        if not native:
            await self._ensure_consumer(
                q.stream,
                {
                    "durable_name": "delay",
                    "filter_subject": q.delayed,
                    "ack_policy": "explicit",
                    "ack_wait": 30_000_000_000,
                    "max_deliver": -1,
                    # Every message waiting for its time is "pending ack" here: no cap.
                    "max_ack_pending": -1,
                    "max_waiting": 4096,
                    "deliver_policy": "all",
                    "replay_policy": "instant",
                },
            )

    async def _ensure_stream(self, config: dict[str, Any]) -> None:
        try:
            await self._client.api(f"STREAM.CREATE.{config['name']}", config)
        except ApiError as exc:
            if "already in use" not in str(exc):
                raise BrokerError(f"cannot create stream {config['name']!r}: {exc}") from None
            # Created by an older version or other options: bring it to this configuration.
            try:
                await self._client.api(f"STREAM.UPDATE.{config['name']}", config)
            except ApiError as update:
                log.warning("stream %s exists with another configuration that cannot be changed: %s", config["name"], update)

    async def _ensure_consumer(self, stream: str, config: dict[str, Any]) -> None:
        name = config["durable_name"]
        body = {"stream_name": stream, "config": config}
        try:
            await self._client.api(f"CONSUMER.DURABLE.CREATE.{stream}.{name}", body)
        except ApiError as exc:
            if "already" not in str(exc).lower() and "exists" not in str(exc).lower():
                raise BrokerError(f"cannot create consumer {name!r} on stream {stream!r}: {exc}") from None
            log.warning("consumer %s on %s exists with other settings (%s); using it as it is", name, stream, exc)

    # ---- publishing ----------------------------------------------------------------------

    def _publication(self, q: _Queue, job_id: str, data: bytes, delay: float, *, msg_id: str, native: bool) -> Request:
        headers = {_MSG_ID: msg_id}
        if msg_id != job_id:
            headers[_ID] = job_id
        if delay <= 0:
            return Request(q.work, data, headers)
        due_ms = int((time.time() + delay) * 1000)
        headers[_DUE] = str(due_ms)
        if native:
            # The fired message does not keep the holder's Nats-Msg-Id: name the job apart.
            headers[_ID] = job_id
            at = datetime.fromtimestamp(due_ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            headers["Nats-Schedule"] = f"@at {at}"
            headers["Nats-Schedule-Target"] = q.work
            return Request(f"{q.holders}.{token(msg_id)}", data, headers)
        return Request(q.delayed, data, headers)

    async def _publish(self, q: _Queue, requests: list[Request]) -> list[int]:
        """Publish; return the stream sequence of the message each request stored or duplicated."""
        if not requests:
            return []
        await self._client.send(requests)
        seqs: list[int] = []
        for r in requests:
            try:
                ack = check(r)
            except ApiError as exc:
                if exc.code == STREAM_NOT_FOUND or exc.status == 503:
                    q.ready = False  # deleted behind our back: created again on the next call
                msg = f"NATS did not store a message for queue {q.name!r}: {exc}"
                raise BrokerError(msg) from None
            seqs.append(int(ack["seq"]) if ack.get("duplicate") else 0)
        return seqs

    async def _gone(self, q: _Queue, seqs: Sequence[int]) -> list[bool]:
        """Whether the stream no longer has each message (acked, or deleted)."""
        reads = [Request(f"$JS.API.DIRECT.GET.{q.stream}", json.dumps({"seq": s}).encode()) for s in seqs]
        await self._client.send(reads)
        return [r.reply is not None and (r.reply.headers or {}).get("Status") == "404" for r in reads]

    async def enqueue(self, queue: str, envelopes: Sequence[Envelope]) -> None:
        if not envelopes:
            return
        for env in envelopes:
            if "\r" in env.id or "\n" in env.id or not env.id:
                msg = f"job id {env.id!r} cannot be carried by NATS: use an id without line breaks"
                raise BrokerError(msg)
        q = await self._ready(queue)
        native = await self._native_schedules()
        todo = [(e, e.id) for e in envelopes]
        # The duplicate window remembers an id after its message is gone; a job enqueued again
        # then (an operator's retry) is not held, so it goes in under an id derived from the
        # gone message's sequence. A few rounds: each retry of one job is one more link.
        for _ in range(8):
            seqs = await self._publish(q, [self._publication(q, e.id, e.data, e.delay, msg_id=m, native=native) for e, m in todo])
            dupes = [(e, s) for (e, _), s in zip(todo, seqs, strict=True) if s]
            if not dupes:
                return
            gone = await self._gone(q, [s for _, s in dupes])
            todo = [(e, f"{e.id}@{s}") for (e, s), g in zip(dupes, gone, strict=True) if g]
            if not todo:
                return
        raise BrokerError(f"could not enqueue {len(todo)} job(s) on queue {queue!r} again: too many recent copies")

    # ---- fetching ------------------------------------------------------------------------

    async def _subscribe(self, q: _Queue) -> None:
        nc = await self._client.nc()
        q.inbox = nc.new_inbox()

        async def arrived(msg: Msg) -> None:
            headers = msg.headers
            status = headers.get("Status") if headers else None
            if status is not None:
                # Statuses come on the request's own reply subject; a stale request's are ignored.
                if status != "100" and msg.subject == q.current:
                    q.finished.set()
                return
            # Delivered messages keep their stream subject, so which request brought one is
            # unknown while an older request may still be open on the server.
            now = time.monotonic()
            if now < q.stale_until:
                # It may have waited on the server since long before now: renew it, so that
                # its lease is known to last from this moment.
                await nc.publish(msg.reply, b"+WPI")
                q.arrived.append((msg, now + self._vt))
            else:
                q.arrived.append((msg, q.sent_at + self._vt))
            if q.current:
                q.count += 1
                if q.count >= q.wanted:
                    q.finished.set()

        q.sub = await nc.subscribe(q.inbox + ".*", cb=arrived)

    async def _pull_now(self, q: _Queue, batch: int) -> None:
        """Ask for up to ``batch`` messages that are there now; they land in ``q.arrived``."""
        nc = await self._client.ready()
        self._requests += 1
        q.current = f"{q.inbox}.{self._requests}"
        q.count, q.wanted = 0, batch
        q.finished.clear()
        q.sent_at = time.monotonic()
        body = json.dumps({"batch": batch, "no_wait": True}).encode()
        await nc.publish(f"$JS.API.CONSUMER.MSG.NEXT.{q.stream}.work", body, reply=q.current)
        ended = False
        try:
            async with asyncio.timeout(self._client.timeout):
                await q.finished.wait()
            ended = True
        except TimeoutError:
            raise BrokerError(f"no reply from NATS to a fetch on queue {q.name!r}") from None
        finally:
            q.current = ""
            if not ended:
                # Cancelled or unanswered: the request may still bring messages for a moment.
                q.stale_until = q.sent_at + self._client.timeout

    async def _pull_wait(self, q: _Queue, wait: float) -> list[Delivery]:
        """Wait up to ``wait`` seconds for one message, on a subscription of this request's own.

        Unsubscribing when the wait ends (cancelled included) withdraws the request: the
        server does not deliver to a reply subject nobody listens on, so an abandoned wait
        leases nothing.
        """
        nc = await self._client.ready()
        sub = await nc.subscribe(nc.new_inbox())
        try:
            body = json.dumps({"batch": 1, "expires": max(int(wait * 1e9), 1_000_000)}).encode()
            await nc.publish(f"$JS.API.CONSUMER.MSG.NEXT.{q.stream}.work", body, reply=sub.subject)
            give_up = time.monotonic() + wait + self._client.timeout
            while (left := give_up - time.monotonic()) > 0:
                try:
                    msg = await sub.next_msg(timeout=left)
                except TimeoutError:
                    return []
                status = msg.headers.get("Status") if msg.headers else None
                if status == "100":
                    continue
                if status is not None:
                    return []
                # It may have waited on the server since the request was sent: renew it,
                # so that its lease is known to last from now.
                renewed = time.monotonic()
                await nc.publish(msg.reply, b"+WPI")
                return [_delivery(msg, renewed + self._vt)]
            return []
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    def _take(self, q: _Queue, max_count: int) -> list[Delivery]:
        out: list[Delivery] = []
        now = time.monotonic()
        while q.arrived and len(out) < max_count:
            msg, deadline = q.arrived.popleft()
            if deadline <= now:
                continue  # its lease ran out unseen: the server hands it out again
            out.append(_delivery(msg, deadline))
        return out

    async def fetch(self, queue: str, max_count: int, *, timeout: float) -> list[Delivery]:
        if max_count <= 0:
            return []
        q = await self._ready(queue)
        if not (await self._native_schedules()) and q.promoter is None:
            q.promoter = asyncio.create_task(self._promote(q))
        give_up = time.monotonic() + timeout
        async with q.lock:
            if not q.inbox:
                await self._subscribe(q)
            got = self._take(q, max_count)
            if got:
                return got
            await self._pull_now(q, max_count)
            got = self._take(q, max_count)
            while not got:
                left = give_up - time.monotonic()
                if left <= 0.001:
                    return []
                # Wait for one; the next fetch takes what else is there without waiting.
                got = await self._pull_wait(q, left)
            return got

    # ---- settling ------------------------------------------------------------------------

    def _holds(self, d: Delivery, now: float) -> bool:
        lease = d.receipt
        return isinstance(lease, _Lease) and not lease.settled and now < lease.deadline

    async def ack(self, queue: str, deliveries: Sequence[Delivery]) -> None:
        now = time.monotonic()
        held = [d for d in deliveries if self._holds(d, now)]
        if not held:
            return
        nc = await self._client.ready()
        for d in held:
            lease: _Lease = d.receipt
            lease.settled = True
            await nc.publish(lease.reply, b"+ACK")

    async def nack(self, queue: str, delivery: Delivery, *, data: bytes | None = None, delay: float = 0.0) -> None:
        if not self._holds(delivery, time.monotonic()):
            return
        lease: _Lease = delivery.receipt
        if data is None:
            lease.settled = True
            body = b"-NAK" if delay <= 0 else b"-NAK " + json.dumps({"delay": int(delay * 1e9)}).encode()
            # Awaited: the server takes acks in the background, and a fetch right after must
            # already find the message back at the front.
            await self._client.send([Request(lease.reply, body)])
            return
        # New bytes are a new message (JetStream messages are immutable), published before the
        # old one is acked; its id is derived from the old one's sequence, so a second attempt
        # after a crash in between is a duplicate the stream drops.
        q = await self._ready(queue)
        native = await self._native_schedules()
        await self._publish(
            q, [self._publication(q, delivery.id, data, delay, msg_id=f"{delivery.id}@{lease.seq}", native=native)]
        )
        if self._holds(delivery, time.monotonic()):
            lease.settled = True
            await self._client.send([Request(lease.reply, b"+ACK")])

    async def extend(self, queue: str, deliveries: Sequence[Delivery]) -> list[Delivery]:
        now = time.monotonic()
        lost = [d for d in deliveries if not self._holds(d, now)]
        held = [d for d in deliveries if self._holds(d, now)]
        nc = await self._client.nc()
        if held and self._client.connected:
            for d in held:
                await nc.publish(d.receipt.reply, b"+WPI")
            deadline = now + self._vt
            for d in held:
                d.receipt.deadline = deadline
        return lost

    # ---- delayed messages on servers without schedules -----------------------------------

    async def _promote(self, q: _Queue) -> None:
        nc = await self._client.nc()
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        delay = 0.1
        try:
            while not self._closed:
                try:
                    await self._client.ready()
                    # Short pulls: a message given back with a delay comes to a waiting pull,
                    # and one whose batch is full waits at most this long for the next.
                    body = {"batch": 256, "expires": int(_PROMOTE_WAIT * 1e9)}
                    await nc.publish(f"$JS.API.CONSUMER.MSG.NEXT.{q.stream}.delay", json.dumps(body).encode(), reply=inbox)
                    due: list[Msg] = []
                    for _ in range(body["batch"]):
                        timeout = 0.001 if due else _PROMOTE_WAIT + self._client.timeout
                        try:
                            msg = await sub.next_msg(timeout=timeout)
                        except TimeoutError:
                            if not due:
                                raise
                            await self._promote_due(q, nc, due)  # a lull: hand over what is due now
                            due = []
                            msg = await sub.next_msg(timeout=_PROMOTE_WAIT + self._client.timeout)
                        if msg.headers and "Status" in msg.headers:
                            break
                        wait = int((msg.headers or {}).get(_DUE, "0")) / 1000 - time.time()
                        if wait > 0:
                            await nc.publish(msg.reply, b"-NAK " + json.dumps({"delay": int(wait * 1e9)}).encode())
                        else:
                            due.append(msg)
                    await self._promote_due(q, nc, due)
                    delay = 0.1
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("promoting delayed jobs of queue %r: %s; retrying in %.1fs", q.name, exc, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _promote_due(self, q: _Queue, nc: Any, due: list[Msg]) -> None:
        """Publish due delayed messages as ready ones, then ack them; one round trip for all."""
        if not due:
            return
        requests = []
        for msg in due:
            headers = msg.headers or {}
            job_id = headers.get(_ID) or headers.get(_MSG_ID, "")
            requests.append(Request(q.work, msg.data, {_MSG_ID: f"{job_id}@d{_seq(msg.reply)}", _ID: job_id}))
        await self._publish(q, requests)
        for msg in due:
            await nc.publish(msg.reply, b"+ACK")

    # ---- inspection ----------------------------------------------------------------------

    async def _scan(self, q: _Queue, subject: str, first: int, limit: int) -> list[Msg]:
        """Messages on ``subject`` from stream sequence ``first`` on, oldest first (direct gets)."""
        out: list[Msg] = []
        seq = first
        while len(out) < limit:
            r = Request(f"$JS.API.DIRECT.GET.{q.stream}", json.dumps({"seq": seq, "next_by_subj": subject}).encode())
            await self._client.send([r])
            assert r.reply is not None
            headers = r.reply.headers or {}
            if "Status" in headers:
                break
            out.append(r.reply)
            seq = int(headers["Nats-Sequence"]) + 1
        return out

    async def get_pending(self, queue: str) -> list[bytes]:
        q = await self._ready(queue)
        try:
            info = await self._client.api(f"CONSUMER.INFO.{q.stream}.work")
        except ApiError as exc:
            raise BrokerError(f"cannot read queue {queue!r}: {exc}") from None
        # Messages above the consumer's delivered mark were never handed out.
        first = int(info["delivered"]["stream_seq"]) + 1
        # At most PENDING_LIMIT (one request each): the kit's bound on what one listing reads.
        ready = await self._scan(q, q.work, first, PENDING_LIMIT)
        subject = q.holders + ".*" if await self._native_schedules() else q.delayed
        later = await self._scan(q, subject, 1, PENDING_LIMIT - len(ready))
        later.sort(key=lambda m: int((m.headers or {}).get(_DUE, "0")))
        return [m.data for m in ready + later]

    async def close(self) -> None:
        self._closed = True
        for q in self._queues.values():
            if q.promoter is not None:
                q.promoter.cancel()
                with contextlib.suppress(BaseException):
                    await q.promoter
            if q.sub is not None:
                # The connection may live on for a results store that shares it.
                with contextlib.suppress(Exception):
                    await q.sub.unsubscribe()
        await self._client.close()


def _seq(reply: str) -> int:
    """The stream sequence in an ack subject (``$JS.ACK.<stream>.<consumer>.<n>.<sseq>.…``)."""
    tokens = reply.split(".")
    return int(tokens[5] if len(tokens) == 9 else tokens[7])


def _delivery(msg: Msg, deadline: float) -> Delivery:
    tokens = msg.reply.split(".")
    # $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<dseq>.<ts>.<pending>, or with
    # <domain>.<account hash> after ACK (servers 2.10+ may send either).
    delivered, seq = (tokens[4], tokens[5]) if len(tokens) == 9 else (tokens[6], tokens[7])
    headers = msg.headers or {}
    # A message published by hand, without an id, is named for its bytes (as in tasqueue-redis).
    job_id = headers.get(_ID) or headers.get(_MSG_ID) or "raw:" + hashlib.sha1(msg.data).hexdigest()  # noqa: S324 - a name, not a secret
    return Delivery(job_id, msg.data, int(delivered), _Lease(msg.reply, int(seq), deadline))
