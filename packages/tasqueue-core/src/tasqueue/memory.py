"""The embedded backend, ``memory://``: a broker and a results store living in the process.

It needs no service and keeps the full contract (leases, redelivery, delays, versioned writes,
expiry), which makes it the reference implementation the conformance kit runs first, and the
backend for tests and single-process programs. Nothing survives the process, and nothing is
shared with another one.

URLs: ``memory://`` builds a new, private instance; ``memory://name`` returns the instance of
that name in this process, so a producer Server and a worker Server can share one queue.
Query options: ``visibility_timeout`` (broker, seconds, default 30); ``expiry`` (results,
seconds or ``none``, default 86400), ``max_keys`` and ``list_limit`` (results, a count or
``none``, default 100000 each). Each half ignores the other's options, so one URL can configure
both.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import threading
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, TypeVar

from tasqueue._keys import RECORD_KEYS
from tasqueue._memory_control import MemoryControl
from tasqueue.broker import PENDING_LIMIT, Delivery, Envelope
from tasqueue.errors import ConfigurationError, NotFoundError
from tasqueue.hookspecs import RegisterBroker, RegisterResults, hookimpl
from tasqueue.results import EventWatch, Write
from tasqueue.urls import count, optional, parse_backend_url, seconds
from tasqueue.wakeup import Wakeup

__all__ = ["DEFAULT_EXPIRY", "DEFAULT_LIST_LIMIT", "DEFAULT_MAX_KEYS", "MemoryBroker", "MemoryResults"]

#: Seconds job messages, results and list entries are kept by default.
DEFAULT_EXPIRY = 86400.0
#: Most keys a store keeps by default (besides persistent ones), whatever their age.
DEFAULT_MAX_KEYS = 100_000
#: Most ids each of the success and failed lists keeps by default (as tasqueue-redis does).
DEFAULT_LIST_LIMIT = 100_000

Clock = Callable[[], float]
_NEVER = float("inf")


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
        self.wakeup = Wakeup()


class MemoryBroker:
    """An in-process broker with leases, delays and FIFO order per queue.

    Every method may be called from any thread and event loop of the process (``srv.sync``
    runs its calls on a loop of its own): state changes hold a lock, and a waiting ``fetch``
    is woken by an ``enqueue`` from anywhere.

    Args:
        visibility_timeout: Seconds a fetched message stays leased without ``extend``.
        clock: A monotonic clock, replaceable in tests.
    """

    #: Only this process sees the queues (see ``Server``'s check of a broker and results pair).
    process_local = True

    def __init__(self, *, visibility_timeout: float = 30.0, clock: Clock = time.monotonic) -> None:
        if not visibility_timeout > 0:
            msg = f"visibility_timeout must be > 0 seconds, got {visibility_timeout}"
            raise ConfigurationError(msg)
        self._vt = float(visibility_timeout)
        self._clock = clock
        self._queues: dict[str, _Queue] = {}
        self._lock = threading.Lock()
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
        with self._lock:
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
        q.wakeup.notify()

    def _tick(self, q: _Queue, now: float) -> None:
        """Make due delayed messages ready and give expired leases back."""
        while q.delayed and q.delayed[0][0] <= now:
            _, _, id_ = heapq.heappop(q.delayed)
            if id_ in q.items:
                q.ready.append(id_)  # to the back, earliest due first: like a publish at that time
        expired: list[str] = []
        while q.lease_heap and q.lease_heap[0][0] <= now:
            deadline, token, id_ = heapq.heappop(q.lease_heap)
            if q.leased.get(id_) == (deadline, token):
                del q.leased[id_]
                expired.append(id_)
        # Back to the front, oldest first: these were taken before anything still waiting.
        q.ready.extendleft(reversed(expired))

    async def fetch(self, queue: str, max_count: int, *, timeout: float) -> list[Delivery]:
        give_up = self._clock() + timeout
        while True:
            with self._lock:
                q = self._queue(queue)
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
                # Armed under the lock that enqueue takes first: its notify cannot slip by.
                waiter = q.wakeup.waiter()
            with waiter:
                await waiter.wait(wait)

    def _holds(self, q: _Queue, d: Delivery) -> bool:
        lease = q.leased.get(d.id)
        return lease is not None and lease[1] == d.receipt

    def _compact(self, q: _Queue) -> None:
        # Settled and renewed leases leave their old heap entries behind; past twice the live
        # count, rebuild the heap so that a busy queue does not pile them up for a whole lease.
        if len(q.lease_heap) > 2 * len(q.leased) + 64:
            q.lease_heap = [(deadline, token, id_) for id_, (deadline, token) in q.leased.items()]
            heapq.heapify(q.lease_heap)

    async def ack(self, queue: str, deliveries: Sequence[Delivery]) -> None:
        with self._lock:
            q = self._queue(queue)
            for d in deliveries:
                if self._holds(q, d):
                    del q.leased[d.id]
                    del q.items[d.id]
            self._compact(q)

    async def nack(self, queue: str, delivery: Delivery, *, data: bytes | None = None, delay: float = 0.0) -> None:
        with self._lock:
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
            self._compact(q)
        q.wakeup.notify()

    async def extend(self, queue: str, deliveries: Sequence[Delivery]) -> list[Delivery]:
        with self._lock:
            q = self._queue(queue)
            deadline = self._clock() + self._vt
            lost: list[Delivery] = []
            for d in deliveries:
                if self._holds(q, d):
                    q.leased[d.id] = (deadline, d.receipt)
                    heapq.heappush(q.lease_heap, (deadline, d.receipt, d.id))
                else:
                    lost.append(d)
            self._compact(q)
            return lost

    async def get_pending(self, queue: str) -> list[bytes]:
        with self._lock:
            q = self._queue(queue)
            self._tick(q, self._clock())
            ids = [*itertools.islice(q.ready, PENDING_LIMIT), *(i for _, _, i in heapq.nsmallest(PENDING_LIMIT, q.delayed))]
            return [q.items[i].data for i in ids if i in q.items][:PENDING_LIMIT]

    def outstanding(self, queue: str) -> int:
        """Messages of ``queue`` that are due or leased: work a worker has yet to finish.

        Delayed messages not due yet do not count. ``tasqueue.testing`` drains a worker by
        waiting until this is 0 on every queue.
        """
        with self._lock:
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


class MemoryResults:
    """An in-process results store with versioned writes, expiry and a cap on its size.

    Keys and list entries go when they expire, and also, oldest written first, when there are
    more than ``max_keys`` keys or ``list_limit`` ids on a list (an id that leaves a list takes
    its job's records with it), so that the store's memory is bounded whatever the throughput.
    Keys written with ``persist=True`` (the core's schedules) neither expire nor count towards
    ``max_keys``. Like ``MemoryBroker``, it may be called from any thread and event loop of the
    process.

    Args:
        expiry: Seconds keys and list entries live (``None`` keeps them until deleted or evicted).
        max_keys: Most keys kept (``None``: no cap); past it the oldest-written go first.
        list_limit: Most ids each of the success and failed lists keeps (``None``: no cap).
        clock: A monotonic clock in seconds, replaceable in tests.
    """

    #: Only this process sees the stored state (see ``Server``'s check of a broker and results pair).
    process_local = True

    def __init__(
        self,
        *,
        expiry: float | None = DEFAULT_EXPIRY,
        max_keys: int | None = DEFAULT_MAX_KEYS,
        list_limit: int | None = DEFAULT_LIST_LIMIT,
        clock: Clock = time.monotonic,
    ) -> None:
        if expiry is not None and not expiry > 0:
            msg = f"expiry must be > 0 seconds or None (keep until deleted), got {expiry}"
            raise ConfigurationError(msg)
        for name, cap in (("max_keys", max_keys), ("list_limit", list_limit)):
            if cap is not None and cap < 1:
                msg = f"{name} must be >= 1 or None (no cap), got {cap}"
                raise ConfigurationError(msg)
        self.expiry = expiry
        self.max_keys = max_keys
        self.list_limit = list_limit
        self._clock = clock
        self._lock = threading.Lock()
        # Keys in write order, which is expiry order (the expiry is the same for all): sweeping
        # and evicting take from the front in O(1). Persistent keys live apart, outside both.
        self._data: OrderedDict[str, _Entry] = OrderedDict()
        self._kept: dict[str, _Entry] = {}
        self._lists: dict[str, OrderedDict[str, float | None]] = {"success": OrderedDict(), "failed": OrderedDict()}
        self._watches: dict[str, set[EventWatch]] = {}
        # The earliest time anything can expire, so that a write sweeps only when something may have.
        self._sweep_at = _NEVER

    def _live(self, key: str, now: float) -> _Entry | None:
        entry = self._data.get(key)
        if entry is None and self._kept:
            entry = self._kept.get(key)
        if entry is not None and entry.expires is not None and entry.expires <= now:
            del self._data[key]
            return None
        return entry

    def _sweep(self, now: float) -> None:
        data = self._data
        if now >= self._sweep_at:  # something may have expired: take it from the fronts
            while data:
                key, entry = next(iter(data.items()))
                if entry.expires is None or entry.expires > now:
                    break
                del data[key]
            for ids in self._lists.values():
                while ids:
                    first, expires_at = next(iter(ids.items()))
                    if expires_at is None or expires_at > now:
                        break
                    del ids[first]
            fronts = [next(iter(d.values()), None) for d in self._lists.values()]
            if data:
                fronts.append(next(iter(data.values())).expires)
            self._sweep_at = min((f for f in fronts if f is not None), default=_NEVER)
        if self.max_keys is not None:
            while len(data) > self.max_keys:
                data.popitem(last=False)
        if self.list_limit is not None:
            for ids in self._lists.values():
                while len(ids) > self.list_limit:
                    # A finished job that falls off its list takes its records with it: records
                    # are bounded by count, not only by age.
                    gone, _ = ids.popitem(last=False)
                    for make in RECORD_KEYS:
                        data.pop(make(gone), None)

    async def get(self, key: str) -> bytes:
        with self._lock:
            entry = self._live(key, self._clock())
        if entry is None:
            msg = f"nothing stored under {key!r}"
            raise NotFoundError(msg)
        return entry.value

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        with self._lock:
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
                # The same value at the same version is this write replayed: it happened.
                return current.version == w.version and current.value == w.value
        if w.persist:
            self._data.pop(w.key, None)
            self._kept[w.key] = _Entry(w.value, w.version, None)
        else:
            if self._kept:
                self._kept.pop(w.key, None)
            expires = None if self.expiry is None else now + self.expiry
            if expires is not None and expires < self._sweep_at:
                self._sweep_at = expires
            self._data[w.key] = _Entry(w.value, w.version, expires)
            self._data.move_to_end(w.key)  # rewritten: now the newest
        return True

    async def set(self, key: str, value: bytes, *, version: int | None = None, persist: bool = False) -> bool:
        with self._lock:
            now = self._clock()
            done = self._write(Write(key, value, version, persist), now)
            self._sweep(now)
            return done

    async def set_many(
        self,
        writes: Sequence[Write],
        *,
        success: Sequence[str] = (),
        failed: Sequence[str] = (),
    ) -> list[bool]:
        with self._lock:
            now = self._clock()
            done = [self._write(w, now) for w in writes]
            expires = None if self.expiry is None else now + self.expiry
            # A write's own list entry only if the write happened, then the ids listed regardless.
            ok = [w.success for w, happened in zip(writes, done, strict=True) if happened and w.success]
            no = [w.failed for w, happened in zip(writes, done, strict=True) if happened and w.failed]
            if expires is not None and expires < self._sweep_at and (ok or no or success or failed):
                self._sweep_at = expires
            for name, ids in (("success", ok), ("failed", no), ("success", success), ("failed", failed)):
                listed = self._lists[name]
                for id_ in ids:
                    listed[id_] = expires
                    listed.move_to_end(id_)  # re-adding moves the id to the end (newest)
            self._sweep(now)
            watches = [w for id_ in (*ok, *no, *success, *failed) for w in self._watches.get(id_, ())] if self._watches else []
        for watch in watches:
            watch.notify()
        return done

    @contextlib.asynccontextmanager
    async def watch(self, ids: Sequence[str]) -> AsyncIterator[EventWatch]:
        """Wake the yielded watch when one of ``ids`` finishes (``NotifyingResults``)."""
        watch = EventWatch()
        with self._lock:
            for id_ in ids:
                self._watches.setdefault(id_, set()).add(watch)
        try:
            yield watch
        finally:
            with self._lock:
                for id_ in ids:
                    watching = self._watches.get(id_)
                    if watching is not None:
                        watching.discard(watch)
                        if not watching:
                            del self._watches[id_]

    async def delete(self, keys: Sequence[str], *, ids: Sequence[str] = ()) -> None:
        with self._lock:
            for key in keys:
                self._data.pop(key, None)
                self._kept.pop(key, None)
            for listed in self._lists.values():
                for id_ in ids:
                    listed.pop(id_, None)

    async def get_success(self) -> list[str]:
        with self._lock:
            self._sweep(self._clock())
            return list(self._lists["success"])

    async def get_failed(self) -> list[str]:
        with self._lock:
            self._sweep(self._clock())
            return list(self._lists["failed"])

    async def close(self) -> None:
        return None


# ---- URL resolution and plugin hooks ---------------------------------------------------------

BROKER_OPTIONS = {"visibility_timeout": seconds}
RESULTS_OPTIONS = {"expiry": optional(seconds), "max_keys": optional(count), "list_limit": optional(count)}

_named_brokers: weakref.WeakValueDictionary[str, MemoryBroker] = weakref.WeakValueDictionary()
_named_results: weakref.WeakValueDictionary[str, MemoryResults] = weakref.WeakValueDictionary()
_named_lock = threading.Lock()

B = TypeVar("B", MemoryBroker, MemoryResults)


def _named(cache: weakref.WeakValueDictionary[str, B], name: str, build: Callable[[], B]) -> B:
    if not name:
        return build()
    with _named_lock:
        found = cache.get(name)
        if found is None:
            found = cache[name] = build()
        return found


def broker_from_url(url: str, **options: Any) -> MemoryBroker:
    """Build (or, for ``memory://name``, share) a ``MemoryBroker`` from a URL."""
    parsed = parse_backend_url(url, BROKER_OPTIONS, options, schemes={"memory"}, what="memory:// broker", ignore=RESULTS_OPTIONS)
    return _named(_named_brokers, parsed.name, lambda: MemoryBroker(**parsed.options))


def results_from_url(url: str, **options: Any) -> MemoryResults:
    """Build (or, for ``memory://name``, share) a ``MemoryResults`` from a URL."""
    parsed = parse_backend_url(
        url, RESULTS_OPTIONS, options, schemes={"memory"}, what="memory:// results store", ignore=BROKER_OPTIONS
    )
    return _named(_named_results, parsed.name, lambda: MemoryResults(**parsed.options))


@hookimpl
def tasqueue_register_brokers(register: RegisterBroker) -> None:
    register("memory", broker_from_url)


@hookimpl
def tasqueue_register_results(register: RegisterResults) -> None:
    register("memory", results_from_url)
