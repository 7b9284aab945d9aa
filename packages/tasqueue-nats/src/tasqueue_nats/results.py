"""The JetStream results store: keys as subjects of a stream that keeps one message per subject.

Under prefix ``P``: stream ``P_results`` (``max_age`` = ``expiry``) holds ``P.r.k.<key>`` for
keys and ``P.r.ok.<id>`` / ``P.r.no.<id>`` for the success and failed lists; stream ``P_keep``
(no age limit) holds keys written with ``persist=True``. Both keep one message per subject, so
a key is its last value and a list holds an id once.

Versioned writes are compare-and-set: the version travels in a header, and a write is
published with ``Nats-Expected-Last-Subject-Sequence`` set to the sequence of the value it
checked, so two writers never both win against the same value. A store remembers the
sequence of each key it last wrote or read; the worker's second write of a job (its outcome,
after ``processing``) is then one publish, not a read and a publish. Writes of one call go out
together: one round trip for a batch of outcomes.

Waiters (``watch``) need nothing extra from writers: a success or failed entry is a message on
``P.r.ok.<id>`` / ``P.r.no.<id>``, which plain NATS subscribers of those subjects see too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from typing import Any

from tasqueue.errors import NotFoundError, ResultsError, TasqueueError
from tasqueue.results import EventWatch, FinishWatch, Write
from tasqueue_nats._client import WRONG_LAST_SEQUENCE, ApiError, Client, Request, check, token
from tasqueue_nats._config import parse_url

__all__ = ["DEFAULT_EXPIRY", "NatsResults"]

log = logging.getLogger("tasqueue.nats")

#: Seconds job records, results and list entries are kept by default (as ``memory://``).
DEFAULT_EXPIRY = 86400.0
_DEFAULT = object()
_VERSION = "Tq-Version"
_EXPECT = "Nats-Expected-Last-Subject-Sequence"
_CACHE = 4096  # keys whose last sequence a store remembers: the jobs in flight, with room to spare
_ROUNDS = 32  # compare-and-set attempts of one write against concurrent writers
_LIST_LIMIT = 100_000


class _Pending:
    """One versioned write on its way: what to send next, until it is decided."""

    __slots__ = ("done", "expect", "kept", "migrate", "read", "subject", "write")

    def __init__(self, write: Write, subject: str, kept: str) -> None:
        self.write = write
        self.subject = subject
        self.kept = kept  # where the key lives if it was written with persist=True
        self.done: bool | None = None
        self.read: str = ""  # the subject to read next, if the write must look first
        self.expect: int | None = None
        self.migrate = False  # the key moves from the kept stream: purge it there once written


class NatsResults:
    """A tasqueue results store on NATS JetStream.

    Args:
        url: ``nats://host:4222`` or ``tls://host:4222``, with options as query parameters.
        expiry: Seconds keys and list entries are kept (``None``: until deleted).
        prefix, replicas, storage, and the connection options: see ``tasqueue_nats._config``.
    """

    def __init__(self, url: str = "nats://127.0.0.1:4222", *, expiry: float | object | None = _DEFAULT, **options: Any) -> None:
        # An argument wins over the URL's query parameter; None (keep everything) is a value.
        conn, own = parse_url(url, "results", options if expiry is _DEFAULT else {**options, "expiry": expiry})
        self._expiry: float | None = own.get("expiry", DEFAULT_EXPIRY)
        if self._expiry is not None and self._expiry <= 0:
            msg = f"expiry must be > 0 seconds or None, got {self._expiry}"
            raise ResultsError(msg)
        self._conn = conn
        self._client = Client(conn)
        p = conn.prefix
        self._stream, self._keep = f"{p}_results", f"{p}_keep"
        self._key, self._kept, self._ok, self._no = f"{p}.r.k.", f"{p}.p.", f"{p}.r.ok.", f"{p}.r.no."
        self._ready = False
        self._lock = asyncio.Lock()
        self._seqs: OrderedDict[str, tuple[int, int | None]] = OrderedDict()  # subject -> (seq, version)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> NatsResults:
        return cls(url, **options)

    @property
    def expiry(self) -> float | None:
        return self._expiry

    async def _setup(self) -> None:
        if self._ready:
            return
        async with self._lock:
            if self._ready:
                return  # type: ignore[unreachable]  # another task finished it while this one waited
            base = {
                "retention": "limits",
                "storage": self._conn.storage,
                "num_replicas": self._conn.replicas,
                "max_msgs_per_subject": 1,
                "allow_direct": True,
                "discard": "old",
            }
            age = int(self._expiry * 1e9) if self._expiry is not None else 0
            for name, subjects, max_age in (
                (self._stream, [self._key + ">", self._ok + "*", self._no + "*"], age),
                (self._keep, [self._kept + ">"], 0),
            ):
                config = {**base, "name": name, "subjects": subjects, "max_age": max_age}
                try:
                    await self._client.api(f"STREAM.CREATE.{name}", config)
                except ApiError as exc:
                    if "already in use" not in str(exc):
                        raise ResultsError(f"cannot create stream {name!r}: {exc}") from None
                    await self._client.api(f"STREAM.UPDATE.{name}", config)
            self._ready = True

    async def _send(self, requests: Sequence[Request]) -> None:
        await self._setup()
        try:
            await self._client.send(requests)
        except TasqueueError as exc:
            raise ResultsError(str(exc)) from None

    # ---- reading -------------------------------------------------------------------------

    def _read(self, stream: str, subject: str) -> Request:
        return Request(f"$JS.API.DIRECT.GET.{stream}", json.dumps({"last_by_subj": subject}).encode())

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        reads = [self._read(self._stream, self._key + token(k)) for k in keys]
        await self._send(reads)
        values: list[bytes | None] = [self._value(r) for r in reads]
        missing = [i for i, v in enumerate(values) if v is None]
        if missing:
            kept = [self._read(self._keep, self._kept + token(keys[i])) for i in missing]
            await self._send(kept)
            for i, r in zip(missing, kept, strict=True):
                values[i] = self._value(r)
        return values

    def _value(self, r: Request) -> bytes | None:
        assert r.reply is not None
        headers = r.reply.headers or {}
        status = headers.get("Status")
        if status == "404":
            return None
        if status is not None:
            raise ResultsError(f"reading from NATS failed: {status} {headers.get('Description', '')}".strip())
        self._remember(headers["Nats-Subject"], int(headers["Nats-Sequence"]), _version(headers))
        return bytes(r.reply.data)

    async def get(self, key: str) -> bytes:
        (value,) = await self.get_many([key])
        if value is None:
            raise NotFoundError(key)
        return value

    def _remember(self, subject: str, seq: int, version: int | None) -> None:
        self._seqs[subject] = (seq, version)
        self._seqs.move_to_end(subject)
        if len(self._seqs) > _CACHE:
            self._seqs.popitem(last=False)

    # ---- writing -------------------------------------------------------------------------

    async def set(self, key: str, value: bytes, *, version: int | None = None, persist: bool = False) -> bool:
        (done,) = await self.set_many([Write(key, value, version, persist)])
        return done

    async def set_many(self, writes: Sequence[Write], *, success: Sequence[str] = (), failed: Sequence[str] = ()) -> list[bool]:
        done: list[bool] = [False] * len(writes)
        # Writes to one key apply in order: each wave holds at most one write per key.
        waves: list[list[int]] = []
        depth: dict[str, int] = {}
        for i, w in enumerate(writes):
            n = depth.get(w.key, 0)
            depth[w.key] = n + 1
            if n == len(waves):
                waves.append([])
            waves[n].append(i)
        lists = [Request(self._ok + token(i), i.encode()) for i in success]
        lists += [Request(self._no + token(i), i.encode()) for i in failed]
        if not waves:
            await self._send(lists)
            self._check_all(lists)
            return done
        for n, wave in enumerate(waves):
            results = await self._apply([writes[i] for i in wave], lists if n == len(waves) - 1 else [])
            for i, ok in zip(wave, results, strict=True):
                done[i] = ok
        return done

    def _check_all(self, requests: Sequence[Request]) -> None:
        for r in requests:
            try:
                check(r)
            except ApiError as exc:
                raise ResultsError(f"NATS did not store {r.subject!r}: {exc}") from None

    async def _apply(self, writes: list[Write], extra: list[Request]) -> list[bool]:
        """Write distinct keys, all in one batch per round; ``extra`` goes with the first round that
        writes every key still pending (not one that must read some first).

        ``extra`` holds the success/failed entries, and a waiter woken by one (``watch``) reads the
        job's status next: it must find the status written, not the one before.
        """
        pending = []
        for w in writes:
            t = token(w.key)
            pending.append(_Pending(w, (self._kept if w.persist else self._key) + t, self._kept + t))
        for p in pending:
            if p.write.version is None:
                continue
            known = self._seqs.get(p.subject)
            if known is not None and (known[1] is None or known[1] < p.write.version):
                p.expect = known[0]
            elif known is None and p.write.version == 0:
                p.expect = 0  # only if absent: no need to read first
            else:
                p.read = p.subject
        for _ in range(_ROUNDS):
            todo = [p for p in pending if p.done is None]
            if not todo:
                break
            requests = [self._request(p) for p in todo]
            now = extra if not any(p.read for p in todo) else []
            await self._send(requests + now)
            if now:
                self._check_all(now)
                extra = []
            for p, r in zip(todo, requests, strict=True):
                self._handle(p, r)
        else:
            raise ResultsError(f"gave up writing {len(writes)} key(s) after {_ROUNDS} conflicting concurrent writes")
        # What rides on a write goes only if it happened: its list entry (NATS has no step that
        # spans two subjects, so it comes right after: a crash in between leaves the job unlisted,
        # never listed by a writer whose status write lost), and the removal of the persisted
        # copy of a key that now lives in the expiring stream.
        for p in pending:
            if p.done:
                for prefix, id_ in ((self._ok, p.write.success), (self._no, p.write.failed)):
                    if id_:
                        extra.append(Request(prefix + token(id_), id_.encode()))
                if p.migrate:
                    extra.append(self._purge(self._keep, p.kept))
        if extra:
            await self._send(extra)
            self._check_all(extra)
        return [bool(p.done) for p in pending]

    def _request(self, p: _Pending) -> Request:
        if p.read:
            return self._read(self._keep if p.read.startswith(self._kept) else self._stream, p.read)
        headers: dict[str, str] | None = None
        if p.write.version is not None:
            headers = {_VERSION: str(p.write.version), _EXPECT: str(p.expect or 0)}
        return Request(p.subject, p.write.value, headers)

    def _handle(self, p: _Pending, r: Request) -> None:
        if p.read:
            subject, p.read = p.read, ""
            assert r.reply is not None
            headers = r.reply.headers or {}
            status = headers.get("Status")
            if status == "404":
                if subject == p.subject and subject != p.kept:
                    p.read = p.kept  # not in the expiring stream: it may have been persisted (a delayed job)
                p.expect = 0
                return
            if status is not None:
                raise ResultsError(f"reading {p.write.key!r} from NATS failed: {status}")
            seq, current = int(headers["Nats-Sequence"]), _version(headers)
            version = p.write.version
            assert version is not None
            if current is not None and current >= version:
                # A write replayed after a lost reply finds its own value: it happened.
                p.done = current == version and bytes(r.reply.data) == p.write.value
                return
            if subject == p.subject:
                self._remember(p.subject, seq, current)
                p.expect = seq
            else:
                p.expect, p.migrate = 0, True
            return
        try:
            ack = check(r)
        except ApiError as exc:
            if exc.code == WRONG_LAST_SEQUENCE:
                p.read = p.subject  # someone wrote in between: look again
                return
            raise ResultsError(f"NATS did not store {p.write.key!r}: {exc}") from None
        self._remember(p.subject, int(ack["seq"]), p.write.version)
        p.done = True

    async def delete(self, keys: Sequence[str], *, ids: Sequence[str] = ()) -> None:
        purges: list[Request] = []
        subjects: list[str] = []
        for k in keys:
            t = token(k)
            purges.append(self._purge(self._stream, self._key + t))
            purges.append(self._purge(self._keep, self._kept + t))
            subjects += [self._key + t, self._kept + t]
        for i in ids:
            t = token(i)
            purges += [self._purge(self._stream, self._ok + t), self._purge(self._stream, self._no + t)]
        for s in subjects:
            self._seqs.pop(s, None)
        await self._send(purges)
        self._check_all(purges)

    def _purge(self, stream: str, subject: str) -> Request:
        return Request(f"$JS.API.STREAM.PURGE.{stream}", json.dumps({"filter": subject}).encode())

    # ---- lists ---------------------------------------------------------------------------

    async def _list(self, prefix: str) -> list[str]:
        """Ids on ``prefix``'s subjects, oldest first, through a short-lived ordered consumer."""
        await self._setup()
        client = self._client
        config = {
            "deliver_policy": "all",
            "ack_policy": "none",
            "filter_subject": prefix + "*",
            "inactive_threshold": 10_000_000_000,
            "mem_storage": True,
            "num_replicas": 1,
            "max_waiting": 1,
        }
        try:
            info = await client.api(f"CONSUMER.CREATE.{self._stream}", {"stream_name": self._stream, "config": config})
        except TasqueueError as exc:
            raise ResultsError(f"cannot list {prefix!r}: {exc}") from None
        name, count = info["name"], min(int(info["num_pending"]), _LIST_LIMIT)
        ids: list[str] = []
        try:
            if count:
                nc = await client.ready()
                inbox = nc.new_inbox()
                sub = await nc.subscribe(inbox)
                try:
                    body = json.dumps({"batch": count, "no_wait": True}).encode()
                    await nc.publish(f"$JS.API.CONSUMER.MSG.NEXT.{self._stream}.{name}", body, reply=inbox)
                    while len(ids) < count:
                        msg = await sub.next_msg(timeout=client.timeout)
                        if msg.headers and "Status" in msg.headers:
                            break
                        ids.append(msg.data.decode())
                except TimeoutError:
                    raise ResultsError(f"listing {prefix!r} timed out") from None
                finally:
                    await sub.unsubscribe()
        finally:
            # If this fails, it goes away by itself after its inactive_threshold.
            with contextlib.suppress(TasqueueError):
                await client.api(f"CONSUMER.DELETE.{self._stream}.{name}")
        return ids

    async def get_success(self) -> list[str]:
        return await self._list(self._ok)

    async def get_failed(self) -> list[str]:
        return await self._list(self._no)

    # ---- waiting -------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def watch(self, ids: Sequence[str]) -> AsyncIterator[FinishWatch | None]:
        """Wake the yielded watch when one of ``ids`` lands on the success or failed list
        (``tasqueue.results.NotifyingResults``); ``None`` when NATS cannot be reached (poll)."""
        watch = EventWatch()
        subs: list[Any] = []

        async def woken(msg: Any) -> None:
            watch.notify()

        try:
            nc = await self._client.ready()
            for id_ in ids:
                for prefix in (self._ok, self._no):
                    subs.append(await nc.subscribe(prefix + token(id_), cb=woken))
            # Once the server answered a PING behind them, every later publish reaches them.
            await nc.flush(timeout=max(1, int(self._client.timeout)))
        except Exception as exc:  # a connection that fails here only costs the waiter its notifications
            log.warning("cannot watch finished jobs (%s); polling instead", exc)
            await _unsubscribe(subs)
            yield None
            return
        try:
            yield watch
        finally:
            await _unsubscribe(subs)

    async def close(self) -> None:
        await self._client.close()


async def _unsubscribe(subs: list[Any]) -> None:
    for sub in subs:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()


def _version(headers: dict[str, str]) -> int | None:
    raw = headers.get(_VERSION)
    return int(raw) if raw is not None else None
