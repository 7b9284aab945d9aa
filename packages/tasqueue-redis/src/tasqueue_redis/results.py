"""``RedisResults``: job messages, results and the success/failed lists in Redis.

Keys (``tq`` is the prefix)::

    tq:<key>      STRING  a 16-byte version header, then the value; expires after ``expiry``
    tq:success    ZSET    job id -> when it was added (µs, Redis clock); trimmed by age and size
    tq:failed     ZSET    likewise
    tq:finished   pub/sub channel: ids just added to either list, for waiters (``watch``)

The header is the write's version in decimal (``-000000000000001`` for an unversioned write), so
"write only if absent or lower" is one ``GETRANGE`` and a compare inside a script, exact for
every version below 2**53 (the core's stay below 2**50). ``set_many`` is one EVALSHA for the
whole batch on a single Redis; on a Cluster, where keys live on different nodes, it is one
pipeline of single-key scripts.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import AsyncIterator, Sequence
from typing import Any, Final, Self

from redis.exceptions import NoScriptError, RedisError

from tasqueue._keys import RECORD_KEYS
from tasqueue.errors import ConfigurationError, NotFoundError, ResultsError
from tasqueue.results import FinishWatch, Write
from tasqueue_redis import _lua
from tasqueue_redis._config import DEFAULT_PREFIX, decodes_responses, make_client, parse_url
from tasqueue_redis._errors import explain
from tasqueue_redis._lanes import lanes_for
from tasqueue_redis._notify import Finishes

__all__ = ["DEFAULT_EXPIRY", "DEFAULT_LIST_LIMIT", "RedisResults"]

#: Seconds keys and list entries are kept by default (as ``memory://`` does).
DEFAULT_EXPIRY = 86400.0
#: Most ids each of the success and failed lists keeps by default.
DEFAULT_LIST_LIMIT = 100_000

log = logging.getLogger("tasqueue.redis")

_HEADER = 16
_UNVERSIONED = b"-000000000000001"
_MAX_VERSION = 2**53
_SAME: Final[Any] = object()
_CHUNK = 1000


def happened(reply: bytes) -> list[bool]:
    """Whether each write of a ``results_write.lua`` call happened: its reply is one b"1"/b"0" per write."""
    return [c == 49 for c in reply]  # b"1"


def _header(version: int | None) -> bytes:
    if version is None:
        return _UNVERSIONED
    if not 0 <= version < _MAX_VERSION:
        msg = f"a write version must be in 0..2**53-1, got {version}"
        raise ValueError(msg)
    return b"%016d" % version


class RedisResults:
    """A ``tasqueue.results.Results`` store on Redis (or Redis Cluster).

    Args:
        client: A ``redis.asyncio.Redis`` or ``redis.asyncio.RedisCluster`` that returns bytes.
        expiry: Seconds job messages and results are kept (``None``: until deleted).
        list_expiry: Seconds ids stay on the success and failed lists; ``expiry`` by default.
        list_limit: Most ids each list keeps (the oldest go first); ``None`` lifts the cap.
        prefix: The first part of every key.
        close_client: Close ``client`` in ``close()`` (``from_url`` sets it).
    """

    def __init__(
        self,
        client: Any,
        *,
        expiry: float | None = DEFAULT_EXPIRY,
        list_expiry: float | None = _SAME,
        list_limit: int | None = DEFAULT_LIST_LIMIT,
        prefix: str = DEFAULT_PREFIX,
        close_client: bool = False,
    ) -> None:
        if list_expiry is _SAME:
            list_expiry = expiry
        for name, value in (("expiry", expiry), ("list_expiry", list_expiry)):
            if value is not None and not value > 0:
                msg = f"{name} must be > 0 seconds or None (keep until deleted), got {value}"
                raise ConfigurationError(msg)
        if list_limit is not None and list_limit < 0:
            msg = f"list_limit must be >= 0 or None (no cap), got {list_limit}"
            raise ConfigurationError(msg)
        if decodes_responses(client):
            msg = "RedisResults needs a client that returns bytes: build it with decode_responses=False"
            raise ConfigurationError(msg)
        self._client = client
        self._cluster = hasattr(client, "nodes_manager")
        self._lanes = None if self._cluster else lanes_for(client)
        self._exec = client.execute_command if self._lanes is None else self._lanes.execute
        self._close_client = close_client
        self._prefix = prefix + ":"
        self.expiry = expiry
        self.list_expiry = list_expiry
        self.list_limit = list_limit
        self._px = 0 if expiry is None else math.ceil(expiry * 1000)
        self._list_ttl_us = 0 if list_expiry is None else math.ceil(list_expiry * 1_000_000)
        self._limit = list_limit or 0
        # The keys of a finished job's records, dropped with its list entry: (count, prefixes...).
        self._records = [len(RECORD_KEYS), *(self._prefix + make("") for make in RECORD_KEYS)]
        self._success = self._prefix + "success"
        self._failed = self._prefix + "failed"
        # Pub/sub needs a standalone client; on a Cluster, waiters poll.
        self._finishes = None if self._cluster else Finishes(client, self._prefix + "finished")

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Self:
        """Build a store and its client from a ``redis://``, ``rediss://`` or ``unix://`` URL."""
        bare, client_opts, own = parse_url(url, "results", options)
        prefix = client_opts.pop("prefix", DEFAULT_PREFIX)
        return cls(make_client(bare, client_opts), prefix=prefix, close_client=True, **own)

    @property
    def client(self) -> Any:
        """The redis-py client this store uses."""
        return self._client

    # ---- reading -------------------------------------------------------------------------

    async def get(self, key: str) -> bytes:
        try:
            raw = await self._exec("GET", self._prefix + key)
        except RedisError as exc:
            msg = f"could not read {key!r}: {exc}"
            raise ResultsError(msg) from exc
        if raw is None:
            msg = f"nothing stored under {key!r}"
            raise NotFoundError(msg)
        value: bytes = raw[_HEADER:]
        return value

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        full = [self._prefix + k for k in keys]
        try:
            if self._cluster:
                raws = await self._client.mget_nonatomic(full)
            else:
                raws = await self._exec("MGET", *full)
        except RedisError as exc:
            msg = f"could not read {len(keys)} key(s): {exc}"
            raise ResultsError(msg) from exc
        return [None if raw is None else raw[_HEADER:] for raw in raws]

    async def get_success(self) -> list[str]:
        return await self._list(self._success, "success")

    async def get_failed(self) -> list[str]:
        return await self._list(self._failed, "failed")

    async def _list(self, key: str, name: str) -> list[str]:
        try:
            ids = await _lua.RESULTS_LIST(self._client, [key], [self._list_ttl_us], self._exec)
        except RedisError as exc:
            msg = f"could not read the {name} list: {exc}"
            raise ResultsError(msg) from exc
        return [i.decode("utf-8", "backslashreplace") for i in ids]

    # ---- writing -------------------------------------------------------------------------

    async def set(self, key: str, value: bytes, *, version: int | None = None, persist: bool = False) -> bool:
        (done,) = await self.set_many([Write(key, value, version, persist)])
        return done

    async def set_many(
        self,
        writes: Sequence[Write],
        *,
        success: Sequence[str] = (),
        failed: Sequence[str] = (),
    ) -> list[bool]:
        if not (writes or success or failed):
            return []
        if len(writes) > _CHUNK and not self._cluster:
            # Keep each script call short: Redis runs nothing else while a script runs.
            done: list[bool] = []
            for start in range(0, len(writes), _CHUNK):
                last = start + _CHUNK >= len(writes)
                part = writes[start : start + _CHUNK]
                done += await self.set_many(part, success=success if last else (), failed=failed if last else ())
            return done
        lone = writes[0] if len(writes) == 1 and not (success or failed or self._cluster) else None
        if lone is not None and (lone.version or 0) == 0 and not (lone.success or lone.failed):
            # One plain or "only if absent" write (every enqueue makes one): a bare SET costs Redis
            # a fraction of a script call. A refused SET NX may still be a win over an
            # unversioned value, so that case alone goes on to the script.
            w = writes[0]
            key, value = self._prefix + w.key, _header(w.version) + w.value
            ttl = () if (w.persist or not self._px) else ("PX", self._px)
            try:
                if w.version is None:
                    await self._exec("SET", key, value, *ttl)
                    return [True]
                if await self._exec("SET", key, value, "NX", *ttl) is not None:
                    return [True]
            except RedisError as exc:
                msg = f"could not write {w.key!r}: {explain(exc)}"
                raise ResultsError(msg) from exc
        try:
            if self._cluster:
                keys, values = self._values(writes)
                return await self._set_many_cluster(writes, keys, values, success, failed)
            keys, args = self._write_call(writes, success, failed)
            reply = await _lua.RESULTS_SET(self._client, keys, args, self._exec)
        except RedisError as exc:
            msg = f"could not write {len(writes)} key(s): {explain(exc)}"
            raise ResultsError(msg) from exc
        return happened(reply)

    def _values(self, writes: Sequence[Write]) -> tuple[list[str], list[Any]]:
        """The value keys of ``writes`` and their (mode, value) arguments (``lua/results_write.lua``)."""
        keys: list[str] = []
        values: list[Any] = []
        for w in writes:
            keys.append(self._prefix + w.key)
            mode = ("u" if w.version is None else "v") if not w.persist else ("U" if w.version is None else "V")
            # A write's own list entry rides on its mode, so that it is added only if the write happens.
            if w.success:
                mode = f"{mode}s{w.success}"
            elif w.failed:
                mode = f"{mode}f{w.failed}"
            values += (mode, _header(w.version) + w.value)
        return keys, values

    def _write_call(
        self, writes: Sequence[Write], success: Sequence[str] = (), failed: Sequence[str] = ()
    ) -> tuple[list[str], list[Any]]:
        """KEYS and ARGV of ``lua/results_write.lua`` for a batch, announcing the ids it lists to waiters."""
        keys, values = self._values(writes)
        ok = [w.success for w in writes if w.success]
        no = [w.failed for w in writes if w.failed]
        lists: list[str] = []
        tail: list[Any] = []
        for name, list_key, ids, own in (("s", self._success, success, ok), ("f", self._failed, failed, no)):
            if ids or own:
                lists.append(list_key)
                tail += (name, len(ids), *ids)
        args = [self._px, self._list_ttl_us, self._limit, *self._records, len(writes), *values, len(lists), *tail]
        finished = [*ok, *no, *success, *failed]
        if self._finishes is None or not finished:
            args += ("", "")
        else:
            args += (self._finishes.channel, self._finishes.message(finished))
        return keys + lists, args

    @contextlib.asynccontextmanager
    async def watch(self, ids: Sequence[str]) -> AsyncIterator[FinishWatch | None]:
        """Wake the yielded watch when one of ``ids`` finishes (``tasqueue.results.NotifyingResults``).

        Yields ``None`` on a Cluster client, or when the subscription cannot be made: the
        caller then polls.
        """
        if self._finishes is None:
            yield None
            return
        try:
            watching = self._finishes.watch(ids)
            watch = await watching.__aenter__()
        except (RedisError, OSError) as exc:
            log.warning("cannot subscribe to finished jobs (%s); polling instead", exc)
            yield None
            return
        try:
            yield watch
        finally:
            await watching.__aexit__(None, None, None)

    def _fused_records(self, writes: Sequence[Write]) -> tuple[list[str], list[Any]]:
        """The KEYS and ARGV of ``lua/records.lua`` for ``writes``, plain or "only if absent" (``RedisBroker.fused_enqueue``)."""
        keys: list[str] = []
        args: list[Any] = [self._px, len(writes)]
        for w in writes:
            if w.version not in (None, 0) or w.success or w.failed:
                msg = f"a fused enqueue stores plain or 'only if absent' records, not version {w.version} ({w.key!r})"
                raise ValueError(msg)
            mode = "u" if w.version is None else "n"
            keys.append(self._prefix + w.key)
            args += (mode.upper() if w.persist else mode, _header(w.version) + w.value)
        return keys, args

    async def _set_many_cluster(
        self, writes: Sequence[Write], keys: list[str], values: list[Any], success: Sequence[str], failed: Sequence[str]
    ) -> list[bool]:
        """Pipelines of single-key scripts: keys of one batch live on different nodes.

        A write's own list entry cannot share its atomic step here (the lists live elsewhere):
        it is added in a second pipeline, once the write is known to have happened.
        """
        head = [self._px, self._list_ttl_us, self._limit, 0]  # no record prefixes: dropped ids come back
        quiet = ("", "")  # nobody to announce to: a Cluster store has no watch
        calls = [
            _lua.RESULTS_SET.args([key], [*head, 1, values[2 * i], values[2 * i + 1], 0, *quiet]) for i, key in enumerate(keys)
        ]
        replies = await self._pipeline(calls)
        done = [r == b"1" for r in replies]
        success = [*(w.success for w, ok in zip(writes, done, strict=True) if ok and w.success), *success]
        failed = [*(w.failed for w, ok in zip(writes, done, strict=True) if ok and w.failed), *failed]
        lists = [
            _lua.RESULTS_SET.args([list_key], [*head, 0, 1, name, len(ids), *ids, *quiet])
            for name, list_key, ids in (("s", self._success, success), ("f", self._failed, failed))
            if ids
        ]
        if lists:
            dropped = [i for reply in await self._pipeline(lists) if isinstance(reply, list) for i in reply]
            if dropped:
                # Finished jobs that fell off a list lose their records (see results_set.lua).
                gone = [self._prefix + make(i.decode()) for i in dropped for make in RECORD_KEYS]
                await self._pipeline([("UNLINK", key) for key in gone])
        return done

    async def _pipeline(self, calls: list[tuple[Any, ...]]) -> list[Any]:
        if not calls:
            return []
        for attempt in range(2):
            try:
                async with self._client.pipeline(transaction=False) as pipe:
                    for call in calls:
                        pipe.execute_command(*call)
                    replies: list[Any] = await pipe.execute()
                return replies
            except NoScriptError:
                # A node restarted or joined since the script was loaded. Everything in the
                # pipeline is safe to run twice, so load it everywhere and go again.
                if attempt:
                    raise
                await _lua.RESULTS_SET.load(self._client)
        raise AssertionError("unreachable")

    async def delete(self, keys: Sequence[str], *, ids: Sequence[str] = ()) -> None:
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                if self._cluster:
                    for key in keys:
                        pipe.delete(self._prefix + key)
                elif keys:
                    pipe.delete(*(self._prefix + k for k in keys))
                if ids:
                    pipe.zrem(self._success, *ids)
                    pipe.zrem(self._failed, *ids)
                await pipe.execute()
        except RedisError as exc:
            msg = f"could not delete {len(keys)} key(s): {exc}"
            raise ResultsError(msg) from exc

    # ---- lifecycle -----------------------------------------------------------------------

    async def close(self) -> None:
        if self._finishes is not None:
            await self._finishes.close()
        if self._lanes is not None:
            await self._lanes.close()
        if self._close_client:
            await self._client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"RedisResults(prefix={self._prefix[:-1]!r}, expiry={self.expiry})"
