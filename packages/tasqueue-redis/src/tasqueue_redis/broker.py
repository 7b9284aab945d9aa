"""``RedisBroker``: at-least-once queues on Redis, with leases, fencing and delayed messages.

Keys of one queue ``q`` share the hash tag ``{q}`` (so a Redis Cluster keeps them on one node
and every script touches one slot)::

    tq:{q}:pending   LIST   ids ready to run; enqueue LPUSHes, claim RPOPs (FIFO)
    tq:{q}:delayed   ZSET   id -> due time (ms, Redis clock)
    tq:{q}:active    ZSET   id -> lease deadline (ms, Redis clock)
    tq:{q}:data      HASH   id -> message bytes (an id held here is "held": enqueue skips it)
    tq:{q}:meta      HASH   id -> "<deliveries> <token>": fetches of the current bytes, and the
                            fencing token of the current lease ("0": not leased)
    tq:{q}:state     HASH   seq (last token), seen/hold (pause detection)
    tq:{q}:wake      LIST   at most one token; idle workers block on it with BLPOP
    tq:{q}:claim:<id> STRING what one claim leased, so a replay of that call gets the same leases
    tq:{q}:sent:<id> STRING the receipt of one recent enqueue call (it expires), so a replay does nothing

The Inspector's counters and indexes (``broker.control``) are described in ``control.py``.

Every state change is one Lua script (``lua/``), so two workers never take one message and a
crash between two commands cannot lose one. A fetch leases messages until a deadline in Redis
server time; the worker renews it (``extend``) while the handler runs; ``ack`` and ``nack``
must present the lease's token, so a worker whose lease ran out and was handed to another
worker can neither settle nor renew the new delivery. Expired leases are taken back by the
claim script that any live worker runs, after a grace, and not after a pause of Redis itself
(see ``liveness`` in ``lua/_common.lua``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Self

from redis.exceptions import NoScriptError, RedisError, ResponseError

from tasqueue.broker import PENDING_LIMIT, Delivery, Envelope, FusedEnqueue, FusedSettle
from tasqueue.errors import BrokerError, ConfigurationError, EnqueueError
from tasqueue.results import Write
from tasqueue_redis import _lua
from tasqueue_redis._config import (
    DEFAULT_PREFIX,
    REPLAY_WINDOW,
    decodes_responses,
    make_client,
    parse_url,
    socket_timeout_of,
)
from tasqueue_redis._errors import explain
from tasqueue_redis._lanes import lanes_for
from tasqueue_redis.control import RedisControl
from tasqueue_redis.results import RedisResults, happened

__all__ = ["QueueStats", "RedisBroker"]

log = logging.getLogger("tasqueue.redis")

#: Most messages one claim script leases (a fetch asks for at most its free slots anyway).
MAX_CLAIM = 1000
#: Most due delayed messages, and most expired leases, one claim script moves.
MOVE_LIMIT = 1000
_ENQUEUE_CHUNK = 500
_SETTLE_CHUNK = 1000
_REPLAY_WINDOW_MS = math.ceil(REPLAY_WINDOW * 1000)


@dataclass(frozen=True, slots=True)
class QueueStats:
    """How many messages a queue holds in each state."""

    pending: int
    delayed: int
    active: int


class _Keys:
    __slots__ = (
        "ack",
        "active",
        "claim",
        "data",
        "delayed",
        "enqueue",
        "extend",
        "give_back",
        "meta",
        "pending",
        "receipt",
        "sent",
        "settled",
        "state",
        "wake",
    )

    def __init__(self, prefix: str, queue: str) -> None:
        base = f"{prefix}:{{{queue}}}:"
        self.pending = base + "pending"
        self.delayed = base + "delayed"
        self.active = base + "active"
        self.data = base + "data"
        self.meta = base + "meta"
        self.state = base + "state"
        self.wake = base + "wake"
        self.receipt = base + "claim:"  # + a fetch's own id: what that claim leased, for a replay
        self.sent = base + "sent:"  # + an enqueue call's own id: its receipt
        # Receipts whose reply arrived, so nothing will replay them: the next claim deletes them.
        self.settled: list[str] = []
        # The KEYS of each script, in the order the script reads them.
        self.enqueue = [self.pending, self.delayed, self.data, self.wake]  # + the call's receipt
        self.claim = [self.pending, self.active, self.delayed, self.data, self.meta, self.state, self.wake]
        self.ack = [self.active, self.data, self.meta]
        self.give_back = [self.pending, self.active, self.delayed, self.data, self.meta, self.wake]
        self.extend = [self.active, self.meta, self.state]


class RedisBroker:
    """A ``tasqueue.broker.Broker`` on Redis (or Redis Cluster).

    Args:
        client: A ``redis.asyncio.Redis`` or ``redis.asyncio.RedisCluster`` that returns bytes
            (``decode_responses=False``, the default).
        visibility_timeout: Seconds a lease lasts without ``extend``. A message whose worker
            died comes back this long (plus a grace of a quarter of it, at most 5 s) after its
            last renewal.
        prefix: The first part of every key, to keep several deployments in one database apart.
        close_client: Close ``client`` in ``close()``. ``from_url`` sets it: the broker made
            the client, so it owns it.

    ``RedisBroker.from_url("redis://host:6379/0?visibility_timeout=30")`` builds the client too;
    see the package README for every URL option.
    """

    def __init__(
        self,
        client: Any,
        *,
        visibility_timeout: float = 30.0,
        prefix: str = DEFAULT_PREFIX,
        close_client: bool = False,
    ) -> None:
        if not visibility_timeout > 0:
            msg = f"visibility_timeout must be > 0 seconds, got {visibility_timeout}"
            raise ConfigurationError(msg)
        if decodes_responses(client):
            msg = "RedisBroker needs a client that returns bytes: build it with decode_responses=False"
            raise ConfigurationError(msg)
        self._client = client
        self._lanes = lanes_for(client)
        self._exec = client.execute_command if self._lanes is None else self._lanes.execute
        self._vt = float(visibility_timeout)
        self._prefix = prefix
        # Claims and enqueues are named <this broker's random tag>-<counter>, so that a replay
        # of one is recognised: unique across processes without an OS random call per call.
        self._call_tag = secrets.token_hex(8)
        self._call_seq = itertools.count()
        self._close_client = close_client
        self._lease_ms = math.ceil(self._vt * 1000)
        self._grace_ms = math.ceil(min(self._vt / 4, 5.0) * 1000)
        # Live workers run a script on their queue at least every third of a lease (a heartbeat)
        # or every idle block (below); a silence of half a lease means Redis was paused.
        self._gap_ms = math.ceil(self._vt * 500)
        block = min(self._vt / 4, 2.0)
        socket_timeout = socket_timeout_of(client)
        if socket_timeout is not None:
            # A blocking read must come back before the socket's read timeout fires.
            block = min(block, socket_timeout / 2)
        self._block = block
        self._keys: dict[str, _Keys] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._control: RedisControl | None = None

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Self:
        """Build a broker and its client from a ``redis://``, ``rediss://`` or ``unix://`` URL."""
        bare, client_opts, own = parse_url(url, "broker", options)
        prefix = client_opts.pop("prefix", DEFAULT_PREFIX)
        return cls(make_client(bare, client_opts), prefix=prefix, close_client=True, **own)

    @property
    def visibility_timeout(self) -> float:
        return self._vt

    @property
    def client(self) -> Any:
        """The redis-py client this broker uses."""
        return self._client

    @property
    def control(self) -> RedisControl:
        """Counts, pages, pause and the worker registry of these queues, for ``tasqueue.Inspector``."""
        if self._control is None:
            self._control = RedisControl(self)
        return self._control

    def _queue(self, queue: str) -> _Keys:
        keys = self._keys.get(queue)
        if keys is None:
            if not queue:
                msg = "a queue name must be a non-empty string"
                raise ConfigurationError(msg)
            keys = _Keys(self._prefix, queue)
            # Redis Cluster hashes the text between the first "{" and the "}" after it; with
            # nothing in between it hashes each whole key, and a queue's keys (which every
            # script takes together) would land on different slots.
            opening = keys.pending.find("{")
            if keys.pending.find("}", opening + 1) == opening + 1:
                if queue.startswith("}"):
                    msg = (
                        f"queue name {queue!r} cannot be used with Redis: a name that starts with '}}' leaves its "
                        "keys without a hash tag, so Redis Cluster would scatter them over slots; rename the queue"
                    )
                else:
                    msg = f"prefix {self._prefix!r} leaves the keys of queue {queue!r} without a hash tag: drop '{{}}' from it"
                raise ConfigurationError(msg)
            self._keys[queue] = keys
            self._spawn(self.control.register(queue))  # once per queue and process, off the hot path
        return keys

    def _call_id(self) -> str:
        return f"{self._call_tag}-{next(self._call_seq)}"

    # ---- publishing ----------------------------------------------------------------------

    async def enqueue(self, queue: str, envelopes: Sequence[Envelope]) -> None:
        keys = self._queue(queue)
        for start in range(0, len(envelopes), _ENQUEUE_CHUNK):
            chunk = envelopes[start : start + _ENQUEUE_CHUNK]
            args: list[Any] = [_REPLAY_WINDOW_MS]
            for env in chunk:
                # Whole milliseconds, rounded up: a message is never fetchable before its delay.
                args += (env.id, env.data, math.ceil(env.delay * 1000) if env.delay > 0 else 0)
            try:
                await _lua.ENQUEUE(self._client, [*keys.enqueue, keys.sent + self._call_id()], args, self._exec)
            except RedisError as exc:
                msg = f"could not publish {len(envelopes)} message(s) to queue {queue!r}: {explain(exc)}"
                if not start:
                    raise BrokerError(msg) from exc
                # Earlier chunks are in Redis: say so, or a caller who tries again runs them twice.
                end = start + len(chunk)
                msg += f"; the first {start} were published, the next {len(chunk)} may have been, the rest were not"
                raise EnqueueError(
                    msg,
                    enqueued=[e.id for e in envelopes[:start]],
                    unknown=[e.id for e in chunk],
                    not_enqueued=[e.id for e in envelopes[end:]],
                ) from exc

    def fused_enqueue(self, results: object) -> FusedEnqueue | None:
        """Store new jobs' records and publish them in one script call (see ``tasqueue.broker``).

        Offered for a ``RedisResults`` on this broker's server with the same connection
        settings (built from the same URL, they share lanes); ``None`` for any other store.
        """
        if self._lanes is None or not isinstance(results, RedisResults) or results._lanes is not self._lanes:
            return None
        return partial(self._enqueue_records, results)

    async def _enqueue_records(
        self, results: RedisResults, queue: str, envelopes: Sequence[Envelope], writes: Sequence[Write]
    ) -> None:
        keys = self._queue(queue)
        record_keys, args = results._fused_records(writes)
        args.append(_REPLAY_WINDOW_MS)
        for env in envelopes:
            args += (env.id, env.data, math.ceil(env.delay * 1000) if env.delay > 0 else 0)
        try:
            receipt = keys.sent + self._call_id()
            await _lua.ENQUEUE_RECORDS(self._client, [*record_keys, *keys.enqueue, receipt], args, self._exec)
        except RedisError as exc:
            if isinstance(exc, ResponseError) and not isinstance(exc, NoScriptError):
                # The script stopped part-way (a key of the wrong type): Redis keeps what it did,
                # the records first. A lost reply needs no such care: the script ran whole or not at all.
                with contextlib.suppress(RedisError):
                    await self._exec("DEL", *record_keys)
            msg = f"could not publish {len(envelopes)} message(s) to queue {queue!r}: {explain(exc)}"
            raise BrokerError(msg) from exc

    def fused_settle(self, results: object) -> FusedSettle | None:
        """Write a batch of outcomes and ack the deliveries they end in one script call (see ``tasqueue.broker``).

        Offered on the same terms as ``fused_enqueue``: a ``RedisResults`` sharing this broker's lanes.
        """
        if self._lanes is None or not isinstance(results, RedisResults) or results._lanes is not self._lanes:
            return None
        return partial(self._settle_outcomes, results)

    async def _settle_outcomes(
        self, results: RedisResults, writes: Sequence[Write], acks: Mapping[str, Sequence[Delivery]]
    ) -> list[bool]:
        if len(writes) > _SETTLE_CHUNK or any(len(d) > _SETTLE_CHUNK for d in acks.values()):
            # Keep each script call short: Redis runs nothing else while a script runs.
            done = await results.set_many(writes)
            for queue, deliveries in acks.items():
                await self.ack(queue, deliveries)
            return done
        keys, args = results._write_call(writes)
        args.append(len(acks))
        for queue, deliveries in acks.items():
            keys += self._queue(queue).ack
            args.append(len(deliveries))
            for d in deliveries:
                args += (d.id, d.receipt)
        try:
            reply = await _lua.SETTLE(self._client, keys, args, self._exec)
        except RedisError as exc:
            msg = f"could not write {len(writes)} outcome(s) and ack {sum(map(len, acks.values()))} message(s): {explain(exc)}"
            raise BrokerError(msg) from exc
        return happened(reply)

    # ---- consuming -----------------------------------------------------------------------

    async def fetch(self, queue: str, max_count: int, *, timeout: float) -> list[Delivery]:
        keys = self._queue(queue)
        loop = asyncio.get_running_loop()
        give_up = loop.time() + max(timeout, 0.0)
        count = min(max_count, MAX_CLAIM)
        deliveries, hint = await self._claim(queue, keys, count)
        while not deliveries:
            wait = give_up - loop.time()
            if wait <= 0 or count <= 0:
                return []
            wait = min(wait, self._block)
            if hint >= 0:
                wait = min(wait, hint / 1000)
            if wait > 0.0005:
                deliveries, hint = await self._wait_then_claim(queue, keys, count, wait)
            else:
                deliveries, hint = await self._claim(queue, keys, count)
        return deliveries

    def _claim_call(self, keys: _Keys, count: int) -> tuple[str, list[str], list[Any]]:
        """This claim's receipt key, and its KEYS (the receipt, then receipts to delete) and ARGV (``lua/claim.lua``)."""
        receipt = keys.receipt + self._call_id()
        done, keys.settled = keys.settled, []
        args = [count, self._lease_ms, self._grace_ms, self._gap_ms, MOVE_LIMIT]
        return receipt, [*keys.claim, receipt, *done], args

    async def _claim(self, queue: str, keys: _Keys, count: int) -> tuple[list[Delivery], float]:
        receipt, claim_keys, args = self._claim_call(keys, count)
        claim = asyncio.ensure_future(_lua.CLAIM(self._client, claim_keys, args, self._exec))
        try:
            reply = await asyncio.shield(claim)
        except asyncio.CancelledError:
            # The worker stopped fetching while the script ran: whatever it leased goes back at
            # once instead of waiting out a lease that nobody holds.
            self._spawn(self._undo_claim(queue, keys, claim))
            raise
        except RedisError as exc:
            msg = f"could not fetch from queue {queue!r}: {explain(exc)}"
            raise BrokerError(msg) from exc
        return self._received(keys, receipt, reply)

    @staticmethod
    def _received(keys: _Keys, receipt: str, reply: list[Any]) -> tuple[list[Delivery], float]:
        deliveries = _deliveries(reply)
        if deliveries:
            keys.settled.append(receipt)
        return deliveries, float(reply[1])

    async def _undo_claim(self, queue: str, keys: _Keys, claim: asyncio.Future[Any]) -> None:
        try:
            deliveries = _deliveries(await claim)
        except RedisError:
            return  # the claim may or may not have run; its leases, if any, will run out
        if deliveries:
            await self._give_back(queue, keys, deliveries, mode="u", delay=0.0, data=None)

    async def _wait_then_claim(self, queue: str, keys: _Keys, count: int, seconds: float) -> tuple[list[Delivery], float]:
        """Wait on the wake list until an enqueue (or a nack) pushes a token, or ``seconds`` pass; then claim.

        On lanes the claim is pipelined behind the BLPOP: Redis runs it the moment the BLPOP
        returns, and both replies come back together, so a woken worker has its job one round
        trip after the enqueue instead of two.
        """
        # Never "0": for BLPOP that means forever.
        blpop = ("BLPOP", keys.wake, f"{max(seconds, 0.001):.3f}")
        if self._lanes is None:
            try:
                await self._exec(*blpop)
            except RedisError as exc:
                msg = f"could not wait for work on queue {queue!r}: {explain(exc)}"
                raise BrokerError(msg) from exc
            return await self._claim(queue, keys, count)
        receipt, claim_keys, args = self._claim_call(keys, count)
        claim = _lua.CLAIM.args(claim_keys, args)
        # The connection's id comes back first (at once), so a cancelled wait can be unblocked.
        waiter = _Waiter()
        exchange = asyncio.ensure_future(self._lanes.execute_many(("CLIENT", "ID"), blpop, claim, first=waiter.identified))
        try:
            _, _, reply = await asyncio.shield(exchange)
        except asyncio.CancelledError:
            self._spawn(self._undo_wait(queue, keys, waiter, exchange))
            raise
        except RedisError as exc:
            msg = f"could not wait for work on queue {queue!r}: {explain(exc)}"
            raise BrokerError(msg) from exc
        if isinstance(reply, NoScriptError):
            return await self._claim(queue, keys, count)
        if isinstance(reply, RedisError):
            msg = f"could not fetch from queue {queue!r}: {explain(reply)}"
            raise BrokerError(msg) from reply
        return self._received(keys, receipt, reply)

    async def _undo_wait(self, queue: str, keys: _Keys, waiter: _Waiter, exchange: asyncio.Future[list[Any]]) -> None:
        """A fetch was cancelled while it waited: end the wait now, and give back what its claim took.

        Closing the connection instead would race a wake-up: the claim queued behind the BLPOP
        may already have leased messages whose reply nobody reads, and they would sit out a
        whole lease.
        """
        identified = asyncio.ensure_future(waiter.known.wait())
        either: list[asyncio.Future[Any]] = [identified, exchange]
        try:
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        finally:
            identified.cancel()
        if not exchange.done() and waiter.client_id is not None:
            with contextlib.suppress(RedisError):  # e.g. an ACL without CLIENT: the wait then runs out
                await self._exec("CLIENT", "UNBLOCK", waiter.client_id)
        try:
            reply = (await exchange)[2]
        except RedisError:
            return  # the claim may or may not have run; its leases, if any, will run out
        if isinstance(reply, list) and (deliveries := _deliveries(reply)):
            await self._give_back(queue, keys, deliveries, mode="u", delay=0.0, data=None)

    async def ack(self, queue: str, deliveries: Sequence[Delivery]) -> None:
        keys = self._queue(queue)
        for start in range(0, len(deliveries), _SETTLE_CHUNK):
            args: list[Any] = []
            for d in deliveries[start : start + _SETTLE_CHUNK]:
                args += (d.id, d.receipt)
            try:
                await _lua.ACK(self._client, keys.ack, args, self._exec)
            except RedisError as exc:
                msg = f"could not ack {len(deliveries)} message(s) on queue {queue!r}: {exc}"
                raise BrokerError(msg) from exc

    async def nack(self, queue: str, delivery: Delivery, *, data: bytes | None = None, delay: float = 0.0) -> None:
        mode = "k" if data is None else "r"
        await self._give_back(queue, self._queue(queue), [delivery], mode=mode, delay=delay, data=data)

    async def _give_back(
        self,
        queue: str,
        keys: _Keys,
        deliveries: Sequence[Delivery],
        *,
        mode: str,
        delay: float,
        data: bytes | None,
    ) -> None:
        args: list[Any] = [math.ceil(delay * 1000) if delay > 0 else 0, mode]
        for d in deliveries:
            args += (d.id, d.receipt, b"" if data is None else data)
        try:
            await _lua.NACK(self._client, keys.give_back, args, self._exec)
        except RedisError as exc:
            msg = f"could not give {len(deliveries)} message(s) back to queue {queue!r}: {exc}"
            raise BrokerError(msg) from exc

    async def extend(self, queue: str, deliveries: Sequence[Delivery]) -> list[Delivery]:
        keys = self._queue(queue)
        lost: list[Delivery] = []
        for start in range(0, len(deliveries), _SETTLE_CHUNK):
            part = deliveries[start : start + _SETTLE_CHUNK]
            args: list[Any] = [self._lease_ms, self._gap_ms]
            for d in part:
                args += (d.id, d.receipt)
            try:
                gone = await _lua.EXTEND(self._client, keys.extend, args, self._exec)
            except RedisError as exc:
                msg = f"could not renew {len(deliveries)} lease(s) on queue {queue!r}: {exc}"
                raise BrokerError(msg) from exc
            lost += (part[i - 1] for i in gone)
        return lost

    # ---- introspection -------------------------------------------------------------------

    async def get_pending(self, queue: str) -> list[bytes]:
        """The oldest waiting messages, at most ``PENDING_LIMIT`` of them (see ``Broker.get_pending``)."""
        keys = self._queue(queue)
        try:
            found: list[bytes] = await _lua.PENDING(
                self._client, [keys.pending, keys.delayed, keys.data], [PENDING_LIMIT], self._exec
            )
        except RedisError as exc:
            msg = f"could not list the pending messages of queue {queue!r}: {exc}"
            raise BrokerError(msg) from exc
        return found

    async def stats(self, queue: str) -> QueueStats:
        """How many messages of ``queue`` are ready, delayed and leased right now."""
        keys = self._queue(queue)
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.llen(keys.pending)
                pipe.zcard(keys.delayed)
                pipe.zcard(keys.active)
                pending, delayed, active = await pipe.execute()
        except RedisError as exc:
            msg = f"could not read the counts of queue {queue!r}: {exc}"
            raise BrokerError(msg) from exc
        return QueueStats(int(pending), int(delayed), int(active))

    # ---- lifecycle -----------------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(self._quietly(coro))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    @staticmethod
    async def _quietly(coro: Any) -> None:
        try:
            await coro
        except Exception:
            log.warning("could not hand back messages of a cancelled fetch; they return when their lease runs out", exc_info=True)

    async def close(self) -> None:
        if self._background:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*self._background, return_exceptions=True), timeout=2.0)
        if self._lanes is not None:
            await self._lanes.close()
        if self._close_client:
            await self._client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"RedisBroker(prefix={self._prefix!r}, visibility_timeout={self._vt:g})"


class _Waiter:
    """The id of the connection a fetch waits on, once Redis has told it."""

    __slots__ = ("client_id", "known")

    def __init__(self) -> None:
        self.client_id: int | None = None
        self.known = asyncio.Event()

    def identified(self, reply: Any) -> None:
        if isinstance(reply, int):
            self.client_id = reply
            self.known.set()


def _deliveries(reply: list[Any]) -> list[Delivery]:
    token = reply[0]
    out: list[Delivery] = []
    for i in range(2, len(reply), 3):
        out.append(Delivery(reply[i].decode("utf-8", "backslashreplace"), reply[i + 1], reply[i + 2], token))
    return out
