"""The embedded backend, ``memory://``: a broker and a results store living in the process.

It needs no service and keeps the full contract (leases, redelivery, delays, versioned writes,
expiry), which makes it the reference implementation the conformance kit runs first, and the
backend for tests and single-process programs. Nothing survives the process.

URLs: ``memory://`` builds a new, private instance; ``memory://name`` returns the instance of
that name in this process, so a producer Server and a worker Server can share one queue.
Query options: ``visibility_timeout`` (broker, seconds, default 30) and ``expiry`` (results,
seconds or ``none``, default 86400).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

from tasqueue._memory_control import MemoryControl
from tasqueue.broker import Delivery, Envelope
from tasqueue.errors import ConfigurationError, NotFoundError
from tasqueue.hookspecs import RegisterBroker, RegisterResults, hookimpl
from tasqueue.results import Write

__all__ = ["DEFAULT_EXPIRY", "MemoryBroker", "MemoryResults"]

#: Seconds job messages, results and list entries are kept by default.
DEFAULT_EXPIRY = 86400.0

Clock = Callable[[], float]


class _Item:
    __slots__ = ("data", "deliveries", "token")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.deliveries = 0
        self.token = 0


class _Queue:
    __slots__ = ("delayed", "items", "lease_heap", "leased", "ready", "seq", "wakeup")

    def __init__(self) -> None:
        self.items: dict[str, _Item] = {}
        self.ready: deque[str] = deque()
        self.delayed: list[tuple[float, int, str]] = []  # heap of (due, seq, id)
        self.leased: dict[str, tuple[float, int]] = {}  # id -> (deadline, token)
        self.lease_heap: list[tuple[float, int, str]] = []  # (deadline, token, id); stale entries skipped
        self.seq = 0
        self.wakeup = asyncio.Event()


class MemoryBroker:
    """An in-process broker with leases, delays and FIFO order per queue.

    Args:
        visibility_timeout: Seconds a fetched message stays leased without ``extend``.
        clock: A monotonic clock, replaceable in tests.
    """

    def __init__(self, *, visibility_timeout: float = 30.0, clock: Clock = time.monotonic) -> None:
        if visibility_timeout <= 0:
            msg = f"visibility_timeout must be > 0 seconds, got {visibility_timeout}"
            raise ConfigurationError(msg)
        self._vt = float(visibility_timeout)
        self._clock = clock
        self._queues: dict[str, _Queue] = {}
        self._control: MemoryControl | None = None

    @property
    def visibility_timeout(self) -> float:
        return self._vt

    @property
    def control(self) -> MemoryControl:
        """Counts, pages, pause and the worker registry of these queues, for ``tasqueue.Inspector``."""
        if self._control is None:
            self._control = MemoryControl(self)
        return self._control

    def _queue(self, name: str) -> _Queue:
        q = self._queues.get(name)
        if q is None:
            q = self._queues[name] = _Queue()
        return q

    async def enqueue(self, queue: str, envelopes: Sequence[Envelope]) -> None:
        q = self._queue(queue)
        now = self._clock()
        for env in envelopes:
            if env.id in q.items:
                continue
            q.items[env.id] = _Item(env.data)
            if env.delay > 0:
                q.seq += 1
                heapq.heappush(q.delayed, (now + env.delay, q.seq, env.id))
            else:
                q.ready.append(env.id)
        q.wakeup.set()

    def _tick(self, q: _Queue, now: float) -> None:
        """Make due delayed messages ready and give expired leases back."""
        while q.delayed and q.delayed[0][0] <= now:
            _, _, id_ = heapq.heappop(q.delayed)
            if id_ in q.items:
                q.ready.append(id_)
        expired: list[str] = []
        while q.lease_heap and q.lease_heap[0][0] <= now:
            deadline, token, id_ = heapq.heappop(q.lease_heap)
            if q.leased.get(id_) == (deadline, token):
                del q.leased[id_]
                expired.append(id_)
        # Back to the front, oldest first: these were taken before anything still waiting.
        q.ready.extendleft(reversed(expired))

    async def fetch(self, queue: str, max_count: int, *, timeout: float) -> list[Delivery]:
        q = self._queue(queue)
        give_up = self._clock() + timeout
        while True:
            now = self._clock()
            self._tick(q, now)
            if q.ready and max_count > 0:
                out: list[Delivery] = []
                deadline = now + self._vt
                while q.ready and len(out) < max_count:
                    id_ = q.ready.popleft()
                    item = q.items[id_]
                    item.deliveries += 1
                    item.token += 1
                    q.leased[id_] = (deadline, item.token)
                    heapq.heappush(q.lease_heap, (deadline, item.token, id_))
                    out.append(Delivery(id_, item.data, item.deliveries, item.token))
                return out
            wait = give_up - now
            if wait <= 0:
                return []
            if q.delayed:
                wait = min(wait, q.delayed[0][0] - now)
            if q.lease_heap:
                wait = min(wait, q.lease_heap[0][0] - now)
            q.wakeup.clear()
            try:
                async with asyncio.timeout(max(wait, 0.0)):
                    await q.wakeup.wait()
            except TimeoutError:
                pass

    def _holds(self, q: _Queue, d: Delivery) -> bool:
        lease = q.leased.get(d.id)
        return lease is not None and lease[1] == d.receipt

    async def ack(self, queue: str, deliveries: Sequence[Delivery]) -> None:
        q = self._queue(queue)
        for d in deliveries:
            if self._holds(q, d):
                del q.leased[d.id]
                del q.items[d.id]

    async def nack(self, queue: str, delivery: Delivery, *, data: bytes | None = None, delay: float = 0.0) -> None:
        q = self._queue(queue)
        if not self._holds(q, delivery):
            return
        del q.leased[delivery.id]
        item = q.items[delivery.id]
        if data is not None:
            item.data = data
            item.deliveries = 0
        if delay > 0:
            q.seq += 1
            heapq.heappush(q.delayed, (self._clock() + delay, q.seq, delivery.id))
        else:
            q.ready.appendleft(delivery.id)
        q.wakeup.set()

    async def extend(self, queue: str, deliveries: Sequence[Delivery]) -> list[Delivery]:
        q = self._queue(queue)
        deadline = self._clock() + self._vt
        lost: list[Delivery] = []
        for d in deliveries:
            if self._holds(q, d):
                q.leased[d.id] = (deadline, d.receipt)
                heapq.heappush(q.lease_heap, (deadline, d.receipt, d.id))
            else:
                lost.append(d)
        return lost

    async def get_pending(self, queue: str) -> list[bytes]:
        q = self._queue(queue)
        self._tick(q, self._clock())
        ids = list(q.ready) + [id_ for _, _, id_ in sorted(q.delayed)]
        return [q.items[i].data for i in ids if i in q.items]

    def outstanding(self, queue: str) -> int:
        """Messages of ``queue`` that are due or leased: work a worker has yet to finish.

        Delayed messages not due yet do not count. ``tasqueue.testing`` drains a worker by
        waiting until this is 0 on every queue.
        """
        q = self._queue(queue)
        self._tick(q, self._clock())
        return len(q.ready) + len(q.leased)

    async def close(self) -> None:
        return None


class _Entry:
    __slots__ = ("expires", "value", "version")

    def __init__(self, value: bytes, version: int | None, expires: float | None) -> None:
        self.value = value
        self.version = version
        self.expires = expires


class _Watch:
    """One waiter on finished jobs, woken from whichever loop or thread records the finish."""

    __slots__ = ("_event", "_loop")

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()

    def notify(self) -> None:
        try:
            same_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            same_loop = False
        if same_loop:
            self._event.set()
        elif not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._event.set)

    async def wait(self, timeout: float) -> bool:
        try:
            async with asyncio.timeout(timeout):
                await self._event.wait()
        except TimeoutError:
            return False
        self._event.clear()
        return True


class MemoryResults:
    """An in-process results store with versioned writes and expiry.

    Args:
        expiry: Seconds keys and list entries live (``None`` keeps them until deleted).
        clock: A wall clock in seconds, replaceable in tests.
    """

    def __init__(self, *, expiry: float | None = DEFAULT_EXPIRY, clock: Clock = time.monotonic) -> None:
        if expiry is not None and expiry <= 0:
            msg = f"expiry must be > 0 seconds or None (keep forever), got {expiry}"
            raise ConfigurationError(msg)
        self.expiry = expiry
        self._clock = clock
        self._data: dict[str, _Entry] = {}
        # Keys in the order they will expire (a constant expiry makes write order expiry order),
        # so that sweeping costs O(1) per write instead of a scan.
        self._expiring: deque[tuple[float, str]] = deque()
        self._lists: dict[str, dict[str, float | None]] = {"success": {}, "failed": {}}
        self._watches: dict[str, set[_Watch]] = {}

    def _live(self, key: str, now: float) -> _Entry | None:
        entry = self._data.get(key)
        if entry is not None and entry.expires is not None and entry.expires <= now:
            del self._data[key]
            return None
        return entry

    def _sweep(self, now: float) -> None:
        while self._expiring and self._expiring[0][0] <= now:
            expires, key = self._expiring.popleft()
            entry = self._data.get(key)
            if entry is not None and entry.expires == expires:
                del self._data[key]
        for ids in self._lists.values():
            while ids:
                first = next(iter(ids))
                expires_at = ids[first]
                if expires_at is None or expires_at > now:
                    break
                del ids[first]

    async def get(self, key: str) -> bytes:
        entry = self._live(key, self._clock())
        if entry is None:
            msg = f"nothing stored under {key!r}"
            raise NotFoundError(msg)
        return entry.value

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        now = self._clock()
        out: list[bytes | None] = []
        for key in keys:
            entry = self._live(key, now)
            out.append(None if entry is None else entry.value)
        return out

    def _write(self, w: Write, now: float) -> bool:
        if w.version is not None:
            current = self._live(w.key, now)
            if current is not None and current.version is not None and current.version >= w.version:
                return False
        expires = None if (w.persist or self.expiry is None) else now + self.expiry
        self._data[w.key] = _Entry(w.value, w.version, expires)
        if expires is not None:
            self._expiring.append((expires, w.key))
        return True

    async def set(self, key: str, value: bytes, *, version: int | None = None, persist: bool = False) -> bool:
        now = self._clock()
        self._sweep(now)
        return self._write(Write(key, value, version, persist), now)

    async def set_many(
        self,
        writes: Sequence[Write],
        *,
        success: Sequence[str] = (),
        failed: Sequence[str] = (),
    ) -> list[bool]:
        now = self._clock()
        self._sweep(now)
        done = [self._write(w, now) for w in writes]
        expires = None if self.expiry is None else now + self.expiry
        for name, ids in (("success", success), ("failed", failed)):
            listed = self._lists[name]
            for id_ in ids:
                listed.pop(id_, None)  # re-adding moves the id to the end (newest)
                listed[id_] = expires
        if self._watches:
            for id_ in (*success, *failed):
                for watch in self._watches.get(id_, ()):
                    watch.notify()
        return done

    @contextlib.asynccontextmanager
    async def watch(self, ids: Sequence[str]) -> AsyncIterator[_Watch]:
        """Wake the yielded watch when one of ``ids`` finishes (``NotifyingResults``)."""
        watch = _Watch()
        for id_ in ids:
            self._watches.setdefault(id_, set()).add(watch)
        try:
            yield watch
        finally:
            for id_ in ids:
                watching = self._watches.get(id_)
                if watching is not None:
                    watching.discard(watch)
                    if not watching:
                        del self._watches[id_]

    async def delete(self, keys: Sequence[str], *, ids: Sequence[str] = ()) -> None:
        for key in keys:
            self._data.pop(key, None)
        for listed in self._lists.values():
            for id_ in ids:
                listed.pop(id_, None)

    async def get_success(self) -> list[str]:
        self._sweep(self._clock())
        return list(self._lists["success"])

    async def get_failed(self) -> list[str]:
        self._sweep(self._clock())
        return list(self._lists["failed"])

    async def close(self) -> None:
        return None


# ---- URL resolution and plugin hooks ---------------------------------------------------------

_named_brokers: weakref.WeakValueDictionary[str, MemoryBroker] = weakref.WeakValueDictionary()
_named_results: weakref.WeakValueDictionary[str, MemoryResults] = weakref.WeakValueDictionary()

B = TypeVar("B", MemoryBroker, MemoryResults)


def _parse(url: str, allowed: set[str]) -> tuple[str, dict[str, str]]:
    parts = urlsplit(url)
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = set(options) - allowed
    if unknown:
        msg = f"unknown option(s) {sorted(unknown)} in {url!r}; memory:// takes {sorted(allowed)}"
        raise ConfigurationError(msg)
    return parts.netloc + parts.path.rstrip("/"), options


def _float(url: str, name: str, value: str) -> float | None:
    if value.lower() in {"none", ""}:
        return None
    try:
        return float(value)
    except ValueError:
        msg = f"option {name}={value!r} in {url!r} must be a number of seconds"
        raise ConfigurationError(msg) from None


def _named(cache: weakref.WeakValueDictionary[str, B], name: str, build: Callable[[], B]) -> B:
    if not name:
        return build()
    found = cache.get(name)
    if found is None:
        found = cache[name] = build()
    return found


def broker_from_url(url: str, **options: Any) -> MemoryBroker:
    """Build (or, for ``memory://name``, share) a ``MemoryBroker`` from a URL."""
    name, query = _parse(url, {"visibility_timeout"})
    if "visibility_timeout" in query:
        vt = _float(url, "visibility_timeout", query["visibility_timeout"])
        if vt is None:
            msg = f"visibility_timeout in {url!r} must be a number of seconds"
            raise ConfigurationError(msg)
        options.setdefault("visibility_timeout", vt)
    return _named(_named_brokers, name, lambda: MemoryBroker(**options))


def results_from_url(url: str, **options: Any) -> MemoryResults:
    """Build (or, for ``memory://name``, share) a ``MemoryResults`` from a URL."""
    name, query = _parse(url, {"expiry"})
    if "expiry" in query:
        options.setdefault("expiry", _float(url, "expiry", query["expiry"]))
    return _named(_named_results, name, lambda: MemoryResults(**options))


@hookimpl
def tasqueue_register_brokers(register: RegisterBroker) -> None:
    register("memory", broker_from_url)


@hookimpl
def tasqueue_register_results(register: RegisterResults) -> None:
    register("memory", results_from_url)
