"""A tasqueue backend on SQLite, stdlib only: the worked example of docs/writing-a-backend.md.

Jobs and results live in one database file that processes on one machine share:
``Server("sqlite:///var/lib/app/jobs.db", plugins=[sqlite_backend])``. SQLite cannot block until
a row appears, so ``fetch`` sleeps on a ``Wakeup`` that this process's enqueues ring and looks
again every ``poll`` seconds for other processes' enqueues. Calls run in a worker thread.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Self, TypeVar

from tasqueue import BrokerError, ResultsError, hookimpl
from tasqueue.broker import PENDING_LIMIT, Delivery, Envelope
from tasqueue.hookspecs import RegisterBroker, RegisterResults
from tasqueue.results import RECORD_KEYS, Results, Write
from tasqueue.urls import count, optional, parse_backend_url, seconds
from tasqueue.wakeup import Wakeup

T = TypeVar("T")
BROKER_OPTIONS = {"visibility_timeout": seconds, "poll": seconds}
RESULTS_OPTIONS = {"expiry": optional(seconds), "list_limit": optional(count)}
SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (queue TEXT, id TEXT, data BLOB, due REAL, leased_until REAL,
    deliveries INTEGER DEFAULT 0, token INTEGER DEFAULT 0, PRIMARY KEY (queue, id));
CREATE INDEX IF NOT EXISTS messages_by_due ON messages (queue, due);
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB, version INTEGER, expires REAL);
CREATE INDEX IF NOT EXISTS kv_by_expiry ON kv (expires);
CREATE TABLE IF NOT EXISTS listed (name TEXT, id TEXT, expires REAL, PRIMARY KEY (name, id));
"""
# `due` is both when a message may be fetched and its place in the FIFO order.
ENQUEUE = "INSERT OR IGNORE INTO messages (queue, id, data, due) VALUES (?, ?, ?, ?)"
READY = """SELECT id, data, deliveries + 1, token + 1 FROM messages
WHERE queue = ? AND due <= ?2 AND (leased_until IS NULL OR leased_until <= ?2) ORDER BY due, rowid LIMIT ?"""
LEASE = "UPDATE messages SET leased_until = ?, deliveries = ?, token = ? WHERE queue = ? AND id = ?"
# A receipt (the token) settles a delivery only while its lease is held.
ACK = "DELETE FROM messages WHERE queue = ? AND id = ? AND token = ? AND leased_until IS NOT NULL"
# Without a delay (?1 = 0), a message goes back ahead of everything in its queue.
NACK = """UPDATE messages SET leased_until = NULL, data = COALESCE(?2, data), deliveries = IIF(?2 IS NULL, deliveries, 0),
due = IIF(?1 > 0, ?1, (SELECT MIN(due) FROM messages WHERE queue = ?3) - 1)
WHERE queue = ?3 AND id = ? AND token = ? AND leased_until IS NOT NULL"""
EXTEND = "UPDATE messages SET leased_until = ? WHERE queue = ? AND id = ? AND token = ? AND leased_until IS NOT NULL"
PENDING = "SELECT data FROM messages WHERE queue = ? AND (leased_until IS NULL OR leased_until <= ?) ORDER BY due, rowid LIMIT ?"
# A versioned write happens only over an unversioned or lower version (expired rows are deleted first).
UPSERT = """INSERT INTO kv (key, value, version, expires) VALUES (?1, ?2, ?3, ?4) ON CONFLICT (key)
DO UPDATE SET value = ?2, version = ?3, expires = ?4 WHERE ?3 IS NULL OR kv.version IS NULL OR kv.version < ?3"""
GET = "SELECT value FROM kv WHERE key = ? AND (expires IS NULL OR expires > ?)"
SAME = "SELECT 1 FROM kv WHERE key = ? AND value = ? AND version = ?"
OVER_LIMIT = "SELECT id FROM listed WHERE name = ? ORDER BY rowid DESC LIMIT -1 OFFSET ?"
LISTED = "SELECT id FROM listed WHERE name = ? AND (expires IS NULL OR expires > ?) ORDER BY rowid"


class Database:
    """One connection; each call is a transaction, run in a worker thread."""

    def __init__(self, path: str, error: type[Exception]) -> None:
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.executescript(SCHEMA)
        self._lock = threading.Lock()
        self._error = error

    def _transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        try:
            with self._lock, self._conn:  # commits, or rolls back on an exception
                self._conn.execute("BEGIN IMMEDIATE")  # take the write lock first: no upgrade deadlocks
                return fn(self._conn)
        except sqlite3.Error as exc:
            raise self._error(f"sqlite: {exc}") from exc

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await asyncio.to_thread(self._transaction, fn)

    async def close(self) -> None:
        with self._lock:
            self._conn.close()


class SqliteBroker:
    def __init__(self, path: str, *, visibility_timeout: float = 30.0, poll: float = 0.5) -> None:
        self.visibility_timeout = visibility_timeout
        self._db = Database(path, BrokerError)
        self._poll = poll
        self._wakeup = Wakeup()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Self:
        parsed = parse_backend_url(url, BROKER_OPTIONS, options, schemes={"sqlite"}, what="sqlite broker", ignore=RESULTS_OPTIONS)
        return cls(parsed.name, **parsed.options)

    async def enqueue(self, queue: str, envelopes: Sequence[Envelope]) -> None:
        now = time.time()
        await self._db.run(lambda c: c.executemany(ENQUEUE, [(queue, e.id, e.data, now + e.delay) for e in envelopes]))
        self._wakeup.notify()

    def _claim(self, c: sqlite3.Connection, queue: str, max_count: int) -> list[Delivery]:
        now = time.time()
        rows = c.execute(READY, (queue, now, max_count)).fetchall()
        c.executemany(LEASE, [(now + self.visibility_timeout, n, token, queue, id_) for id_, _, n, token in rows])
        return [Delivery(*row) for row in rows]

    async def fetch(self, queue: str, max_count: int, *, timeout: float) -> list[Delivery]:
        give_up = time.monotonic() + timeout
        while True:
            with self._wakeup.waiter() as waiter:  # armed before looking: no enqueue slips by
                got = await self._db.run(lambda c: self._claim(c, queue, max_count))
                left = give_up - time.monotonic()
                if got or left <= 0:
                    return got
                await waiter.wait(min(left, self._poll))  # due delays, lost leases, other processes

    async def ack(self, queue: str, deliveries: Sequence[Delivery]) -> None:
        await self._db.run(lambda c: c.executemany(ACK, [(queue, d.id, d.receipt) for d in deliveries]))

    async def nack(self, queue: str, delivery: Delivery, *, data: bytes | None = None, delay: float = 0.0) -> None:
        due = time.time() + delay if delay > 0 else 0
        await self._db.run(lambda c: c.execute(NACK, (due, data, queue, delivery.id, delivery.receipt)))
        self._wakeup.notify()

    async def extend(self, queue: str, deliveries: Sequence[Delivery]) -> list[Delivery]:
        def renew(c: sqlite3.Connection) -> list[Delivery]:
            until = time.time() + self.visibility_timeout
            return [d for d in deliveries if c.execute(EXTEND, (until, queue, d.id, d.receipt)).rowcount == 0]

        return await self._db.run(renew)

    async def get_pending(self, queue: str) -> list[bytes]:
        rows = await self._db.run(lambda c: c.execute(PENDING, (queue, time.time(), PENDING_LIMIT)).fetchall())
        return [data for (data,) in rows]

    async def close(self) -> None:
        await self._db.close()


class SqliteResults(Results):  # inherits get and set, built on get_many and set_many
    def __init__(self, path: str, *, expiry: float | None = 86400.0, list_limit: int | None = 100_000) -> None:
        self.expiry = expiry
        self.list_limit = list_limit
        self._db = Database(path, ResultsError)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Self:
        parsed = parse_backend_url(url, RESULTS_OPTIONS, options, schemes={"sqlite"}, what="sqlite store", ignore=BROKER_OPTIONS)
        return cls(parsed.name, **parsed.options)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        def read(c: sqlite3.Connection) -> list[bytes | None]:
            now = time.time()
            return [next(iter(c.execute(GET, (key, now)).fetchone() or ()), None) for key in keys]

        return await self._db.run(read)

    async def set_many(self, writes: Sequence[Write], *, success: Sequence[str] = (), failed: Sequence[str] = ()) -> list[bool]:
        def write(c: sqlite3.Connection) -> list[bool]:
            now = time.time()
            expires = None if self.expiry is None else now + self.expiry
            c.execute("DELETE FROM kv WHERE expires <= ?", (now,))
            c.execute("DELETE FROM listed WHERE expires <= ?", (now,))
            done = [
                c.execute(UPSERT, (w.key, w.value, w.version, None if w.persist else expires)).rowcount == 1
                # The same value at the same version is this write replayed: it happened.
                or c.execute(SAME, (w.key, w.value, w.version)).fetchone() is not None
                for w in writes
            ]
            # A write's own list entry only if it happened, then the ids listed regardless. REPLACE
            # gives the row a new rowid: a re-added id moves to the newest end.
            rows = [("success", w.success, expires) for w, ok in zip(writes, done, strict=True) if ok and w.success]
            rows += [("failed", w.failed, expires) for w, ok in zip(writes, done, strict=True) if ok and w.failed]
            rows += [(name, id_, expires) for name, ids in (("success", success), ("failed", failed)) for id_ in ids]
            c.executemany("INSERT OR REPLACE INTO listed (name, id, expires) VALUES (?, ?, ?)", rows)
            if self.list_limit is not None:
                # A list past its cap drops its oldest ids, and their jobs' records with them.
                for name in {name for name, _, _ in rows}:
                    gone = c.execute(OVER_LIMIT, (name, self.list_limit)).fetchall()
                    c.executemany("DELETE FROM listed WHERE name = ? AND id = ?", [(name, id_) for (id_,) in gone])
                    c.executemany("DELETE FROM kv WHERE key = ?", [(make(id_),) for (id_,) in gone for make in RECORD_KEYS])
            return done

        return await self._db.run(write)

    async def delete(self, keys: Sequence[str], *, ids: Sequence[str] = ()) -> None:
        def remove(c: sqlite3.Connection) -> None:
            c.executemany("DELETE FROM kv WHERE key = ?", [(key,) for key in keys])
            c.executemany("DELETE FROM listed WHERE id = ?", [(id_,) for id_ in ids])

        await self._db.run(remove)

    async def get_success(self) -> list[str]:
        return [id_ for (id_,) in await self._db.run(lambda c: c.execute(LISTED, ("success", time.time())).fetchall())]

    async def get_failed(self) -> list[str]:
        return [id_ for (id_,) in await self._db.run(lambda c: c.execute(LISTED, ("failed", time.time())).fetchall())]

    async def close(self) -> None:
        await self._db.close()


@hookimpl
def tasqueue_register_brokers(register: RegisterBroker) -> None:
    register("sqlite", SqliteBroker.from_url)


@hookimpl
def tasqueue_register_results(register: RegisterResults) -> None:
    register("sqlite", SqliteResults.from_url)
