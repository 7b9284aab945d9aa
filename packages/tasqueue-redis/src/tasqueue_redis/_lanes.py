"""A lean command path for the hot loop: redis-py connections without the pool's per-command work.

Profiling a worker (py-spy, 60,000 no-op jobs) put 37 % of its CPU in redis-py's command path,
and a third of that in what surrounds the socket: the pool's lock and condition, its timeout,
observability hooks awaited on every checkout and release, a deprecation wrapper, the retry
closure, and pure-Python argument packing. ``Lanes`` keeps the part that matters, connections
made and configured by the client's own pool (auth, database, TLS, client name, timeouts),
and sends each command on an idle one, packing with hiredis when it is installed.

A broker and a results store built from one URL share one ``Lanes`` (``lanes_for``): one set
of connections, and a sign that they talk to the same server, which lets the broker store a
job's record in the script that publishes it (``RedisBroker.fused_enqueue``).

It keeps redis-py's semantics where they count: a command that fails with a connection error
or a timeout is sent again on a fresh connection, with jittered backoff, up to the client's
retry count (every script is safe to replay), but never later than ``RESEND_WINDOW`` after its
first try, and never after an error no retry fixes (``_errors``); a connection interrupted by
a cancellation is disconnected by redis-py before it is reused. Cluster clients and clients
that use a single connection do not use lanes.
"""

from __future__ import annotations

import asyncio
import random
import weakref
from collections.abc import Callable
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tasqueue_redis._config import RESEND_WINDOW
from tasqueue_redis._errors import Target, unrecoverable

_hiredis_pack: Callable[[tuple[Any, ...]], bytes] | None
try:
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # pragma: no cover - hiredis is an optional extra
    _hiredis_pack = None

__all__ = ["Lanes", "lanes_for"]

_BACKOFF_BASE, _BACKOFF_CAP = 0.01, 1.0
_RETRYABLE = (RedisConnectionError, RedisTimeoutError, OSError)
_BACKED_UP = 64 * 1024


class _TooLate(Exception):
    """A resend would come later than ``RESEND_WINDOW`` after the first try."""


class _LoopLanes:
    """The idle connections of one event loop (a connection's streams belong to the loop that opened it)."""

    __slots__ = ("idle", "slots")

    def __init__(self, limit: int) -> None:
        self.idle: list[Any] = []
        self.slots = asyncio.Semaphore(limit)


class Lanes:
    """Send one command at a time per connection, on connections made by ``pool``.

    Each event loop that uses it (``asyncio.run`` twice, a sync facade's thread) gets idle
    connections and a connection limit of its own.
    """

    def __init__(self, pool: Any, *, retries: int, max_connections: int) -> None:
        self._pool = pool
        self._users = 1  # owners sharing it (lanes_for); the last close() closes it
        self._retries = retries
        self._made: list[Any] = []
        self._limit = max_connections
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopLanes] = weakref.WeakKeyDictionary()
        self._pack: Callable[[Any, tuple[Any, ...]], Any] = _pack_hiredis if _hiredis_pack is not None else _pack_python
        # Where a URL-built client connects (see _errors), for telling a wrong port from a failure.
        self._target: Target | None = getattr(pool.connection_kwargs.get("retry"), "target", None)

    async def execute(self, *args: Any) -> Any:
        """Send ``args`` as one command and return the parsed reply (raising an error reply)."""
        reply = (await self._exchange((args,)))[0]
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    async def execute_many(self, *commands: tuple[Any, ...], first: Callable[[Any], None] | None = None) -> list[Any]:
        """Send ``commands`` in one write on one connection; return their replies in order.

        An error reply is returned as its exception, not raised: the replies after it still
        belong to this call. Redis runs pipelined commands one after another, so a command
        queued behind a blocking one runs as soon as that one returns, in the same reply.
        ``first``, when given, is called with the first reply as soon as it is read (again
        after a resend).
        """
        return await self._exchange(commands, first)

    async def _exchange(self, commands: tuple[tuple[Any, ...], ...], first: Callable[[Any], None] | None = None) -> list[Any]:
        loop = asyncio.get_running_loop()
        lanes = self._loops.get(loop)
        if lanes is None:
            lanes = self._loops[loop] = _LoopLanes(self._limit)
        async with lanes.slots:
            conn = lanes.idle.pop() if lanes.idle else self._make()
            try:
                started = loop.time()
                failures = 0
                while True:
                    try:
                        if failures:
                            # Connect first: the window bounds when a command is sent, not when
                            # the connection that carries it began.
                            await conn.connect()
                            if loop.time() - started > RESEND_WINDOW:
                                raise _TooLate
                        if len(commands) == 1:
                            packed = self._pack(conn, commands[0])
                        else:
                            packed = [part for cmd in commands for part in _as_list(self._pack(conn, cmd))]
                        await _send(conn, packed)
                        replies: list[Any] = []
                        for _ in commands:
                            try:
                                replies.append(await conn.read_response())
                            except ResponseError as exc:
                                replies.append(exc)
                            if first is not None and len(replies) == 1:
                                first(replies[0])
                        if self._target is not None:
                            self._target.connected = True
                        return replies
                    except _RETRYABLE as exc:
                        # The command may or may not have run; scripts are written to be replayed.
                        await conn.disconnect()
                        fatal = await unrecoverable(exc, self._target, _where(conn))
                        if fatal is not None:
                            raise fatal from exc
                        failures += 1
                        if failures > self._retries:
                            raise
                        last: BaseException = exc
                        cap = min(_BACKOFF_CAP, _BACKOFF_BASE * 2**failures)
                        await asyncio.sleep(random.uniform(cap / 2, cap))
                    except _TooLate:
                        raise last from None
            finally:
                lanes.idle.append(conn)

    def _make(self) -> Any:
        conn = self._pool.make_connection()
        self._made.append(conn)
        return conn

    async def close(self) -> None:
        self._users -= 1
        if self._users > 0:
            return
        made, self._made = self._made, []
        self._loops.clear()
        for conn in made:
            try:
                await conn.disconnect(nowait=True)
            except Exception:  # noqa: S112 - a connection of a loop that is gone has nothing left to close
                continue


async def _send(conn: Any, packed: Any) -> None:
    """Write a packed command; wait for the socket only when its buffer is backed up.

    redis-py wraps every write in ``asyncio.wait_for`` (a task per command); a connected
    socket with room in its buffer needs no waiting at all. Anything unusual (not connected,
    health checks on, a redis-py without a stream writer) takes redis-py's own path.
    """
    writer = getattr(conn, "_writer", None)
    if writer is None or not conn.is_connected or conn.health_check_interval:
        await conn.send_packed_command(packed)
        return
    if isinstance(packed, bytes):
        writer.write(packed)
    else:
        writer.writelines(packed)
    if writer.transport.get_write_buffer_size() > _BACKED_UP:
        try:
            await asyncio.wait_for(writer.drain(), conn.socket_timeout)
        except TimeoutError:
            await conn.disconnect(nowait=True)
            msg = "Timeout writing to socket"
            raise RedisTimeoutError(msg) from None
        except BaseException:
            # Cancelled (or failed) with part of the command unsent: the connection is unusable.
            await conn.disconnect(nowait=True)
            raise


def _where(conn: Any) -> str:
    host, port = getattr(conn, "host", None), getattr(conn, "port", None)
    return f"{host}:{port}" if host else "the server"


def _as_list(packed: Any) -> list[bytes]:
    return [packed] if isinstance(packed, bytes) else list(packed)


def _pack_hiredis(conn: Any, args: tuple[Any, ...]) -> Any:
    assert _hiredis_pack is not None
    return _hiredis_pack(args)


def _pack_python(conn: Any, args: tuple[Any, ...]) -> Any:
    return conn.pack_command(*args)


#: Lanes in use, for lanes_for to share between clients that connect alike.
_open: weakref.WeakSet[Lanes] = weakref.WeakSet()


def lanes_for(client: Any, retries: int | None = None) -> Lanes | None:
    """Lanes over a standalone ``redis.asyncio.Redis`` client's pool; ``None`` for other clients.

    A client that connects exactly as one already served does (same server, database,
    credentials, timeouts; a broker and a results store built from one URL) shares its lanes.
    Each owner calls ``close()`` once.
    """
    pool = getattr(client, "connection_pool", None)
    if pool is None or getattr(client, "single_connection_client", False) or not hasattr(pool, "make_connection"):
        return None
    if retries is None:
        retry = pool.connection_kwargs.get("retry")
        retries = int(retry.get_retries()) if retry is not None and hasattr(retry, "get_retries") else 3
    limit = min(int(getattr(pool, "max_connections", None) or 64), 1024)
    identity = _identity(pool)
    for lanes in _open:
        if (
            lanes._users > 0
            and lanes._retries == max(retries, 0)
            and lanes._limit == limit
            and _identity(lanes._pool) == identity
        ):
            lanes._users += 1
            return lanes
    lanes = Lanes(pool, retries=max(retries, 0), max_connections=limit)
    _open.add(lanes)
    return lanes


#: Connection settings that are per-client plumbing, not where or how to connect. Any other
#: setting that differs (an unknown object, say) keeps two clients' lanes apart: the safe side.
_PLUMBING = frozenset(
    {"retry", "event_dispatcher", "himport_registry", "maint_notifications_pool_handler", "maint_notifications_config"}
)


def _identity(pool: Any) -> tuple[Any, dict[str, Any]]:
    """What decides where and how a pool's connections connect."""
    return pool.connection_class, {k: v for k, v in pool.connection_kwargs.items() if k not in _PLUMBING}
