"""One NATS connection, connected on first use, and pipelined JetStream requests over it.

Brokers and results stores each own one ``Client``. Its requests share one reply inbox (a
wildcard subscription) and a table of futures, so that a batch of publishes or reads is written
in one go and awaited together, and the server's answers come back in the order they come.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import re
import ssl
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

import nats
from tasqueue.errors import BrokerError, ConfigurationError, TasqueueError
from tasqueue_nats._config import Connection

__all__ = ["ApiError", "Client", "Request", "token"]

log = logging.getLogger("tasqueue.nats")

#: JetStream error codes the backends act on.
WRONG_LAST_SEQUENCE = 10071
STREAM_NOT_FOUND = 10059
CONSUMER_NOT_FOUND = 10014
_CHUNK = 1000  # requests in flight per batch
_LONGEST = 120  # characters of a token
_UNSAFE = re.compile(r"[^A-Za-z0-9-]+")
_decode = msgspec.json.Decoder(dict[str, Any]).decode


def _escape(match: re.Match[str]) -> str:
    return "".join(f"_{b:02x}" for b in match.group().encode())


def token(name: str) -> str:
    """``name`` as one subject token and a valid stream or consumer name, one-to-one.

    Letters, digits and ``-`` stay; every other byte of the UTF-8 becomes ``_xx`` (hex), so
    ``tasqueue:tasks`` is ``tasqueue_3atasks`` and no two names share a token.
    """
    if not name:
        return "_"
    escaped = _UNSAFE.sub(_escape, name)
    if len(escaped) > _LONGEST:
        # Stream names become file names: a long one keeps its start and a digest of the whole.
        return escaped[: _LONGEST - 34] + "__" + hashlib.sha256(name.encode()).hexdigest()[:32]
    return escaped


class ApiError(TasqueueError):
    """A JetStream API error reply (``code`` is its ``err_code``)."""

    def __init__(self, description: str, code: int = 0, status: int = 0) -> None:
        super().__init__(description)
        self.code = code
        self.status = status


class Request:
    """One request of a pipelined batch: what to send and, once answered, the reply."""

    __slots__ = ("headers", "payload", "reply", "subject")

    def __init__(self, subject: str, payload: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.subject = subject
        self.payload = payload
        self.headers = headers
        self.reply: Msg | None = None


class Client:
    """A lazily connected NATS client with a multiplexed reply inbox.

    Reconnects forever: a worker and a producer resume on their own after a server restart.
    A request waits at most ``timeout`` seconds for its reply and then raises, so an outage
    makes an enqueue fail after a bounded time rather than hang or report success.
    """

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._nc: NATS | None = None
        self._lock = asyncio.Lock()
        self._inbox = ""
        self._waiting: dict[str, asyncio.Future[Msg]] = {}
        self._next = 0
        self._connected = asyncio.Event()
        #: Bumped at every reconnect: leases granted before it may be gone (a restarted server).
        self.epoch = 0
        self.version: tuple[int, int, int] = (0, 0, 0)
        self._shared: _Shared | None = None
        self._replies: Any = None

    @property
    def timeout(self) -> float:
        return self.conn.timeout

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def nc(self) -> NATS:
        nc = self._nc
        if nc is not None:
            return nc
        async with self._lock:
            if self._nc is None:
                shared = _Shared.of(self.conn)
                shared.clients.add(self)
                try:
                    async with shared.lock:
                        if shared.nc is None or shared.nc.is_closed:
                            shared.nc = await self._connect(shared)
                    self._nc = await self._join(shared.nc)
                except BaseException:
                    shared.clients.discard(self)
                    raise
                self._shared = shared
            return self._nc

    def _options(self, shared: _Shared) -> dict[str, Any]:
        c = self.conn
        options: dict[str, Any] = {
            "servers": c.servers,
            "connect_timeout": c.connect_timeout,
            "allow_reconnect": True,
            # The first connection gives up soon, with a clear error; once connected, the
            # client reconnects forever (set in _connect).
            "max_reconnect_attempts": 1,
            "reconnect_time_wait": 0.25,
            # Notice a frozen or unreachable server in seconds, not after nats-py's 4 minutes.
            "ping_interval": 5,
            "max_outstanding_pings": 2,
            "error_cb": shared.on_error,
            "disconnected_cb": shared.on_disconnected,
            "reconnected_cb": shared.on_reconnected,
        }
        if c.name:
            options["name"] = c.name
        if c.user is not None:
            options["user"] = c.user
            options["password"] = c.password or ""
        if c.token:
            options["token"] = c.token
        for path, what in ((c.nkey, "nkey"), (c.creds, "creds")):
            if path and not os.path.isfile(path):
                msg = f"the NATS {what} file {path!r} does not exist; give the path of a readable file"
                raise ConfigurationError(msg)
        if (c.nkey or c.creds) and importlib.util.find_spec("nkeys") is None:
            msg = "nkey and creds authentication need the nkeys package: pip install 'tasqueue-nats[nkeys]'"
            raise ConfigurationError(msg)
        if c.nkey:
            options["nkeys_seed"] = c.nkey
        if c.creds:
            options["user_credentials"] = c.creds
        if c.tls:
            options["tls"] = self._tls_context()
            host = c.servers[0].split("://", 1)[1].rsplit(":", 1)[0].strip("[]")
            options["tls_hostname"] = host
        return options

    def _tls_context(self) -> ssl.SSLContext:
        c = self.conn
        try:
            ctx = ssl.create_default_context(cafile=c.tls_ca)
            if c.tls_cert and c.tls_key:
                ctx.load_cert_chain(c.tls_cert, c.tls_key)
        except (OSError, ssl.SSLError) as exc:
            msg = f"cannot load the TLS files (tls_ca={c.tls_ca!r}, tls_cert={c.tls_cert!r}): {exc}"
            raise ConfigurationError(msg) from None
        return ctx

    async def _connect(self, shared: _Shared) -> NATS:
        where = ", ".join(self.conn.servers)
        options = self._options(shared)
        try:
            # nats-py can wait far longer than connect_timeout on a failed TLS handshake.
            async with asyncio.timeout(self.conn.connect_timeout * 2 + 1):
                nc = await nats.connect(**options)
        except TasqueueError:
            raise
        except ssl.SSLCertVerificationError as exc:
            msg = f"TLS to NATS at {where} failed: {exc.verify_message}; give the server's CA with ?tls_ca=/path/ca.pem"
            raise BrokerError(msg) from None
        except Exception as exc:
            gave_up = isinstance(exc, nats.errors.NoServersError | TimeoutError)
            cause = shared.last_error if gave_up and shared.last_error else exc
            if isinstance(cause, ssl.SSLCertVerificationError):
                hint = "give the server's CA with ?tls_ca=/path/ca.pem"
                if not self.conn.tls:
                    hint = f"the server requires TLS: use tls:// and {hint}"
                msg = f"TLS to NATS at {where} failed: {cause.verify_message}; {hint}"
                raise BrokerError(msg) from None
            raise BrokerError(_connect_error(where, cause, self.conn)) from None
        if self.conn.tls and not nc._server_info.get("tls_required"):
            # nats-py talks plain text to a server that offers no TLS, whatever the URL says.
            await nc.close()
            msg = f"NATS at {where} does not offer TLS: use nats:// for it, or enable TLS on the server"
            raise BrokerError(msg)
        nc.options["max_reconnect_attempts"] = -1
        if hasattr(nc, "_parse_header_lines"):
            nc._parse_header_lines = _parse_header_lines  # type: ignore[method-assign]  # this connection's only
        return nc

    async def _join(self, nc: NATS) -> NATS:
        """Take part in a shared connection: a reply inbox of this client's own."""
        self._inbox = nc.new_inbox()
        self._replies = await nc.subscribe(self._inbox + ".*")
        _dispatch_directly(self._replies, self._on_reply)
        version = nc.connected_server_version
        self.version = (version.major, version.minor, version.patch)
        if nc.is_connected:
            self._connected.set()
        return nc

    def _on_reply(self, msg: Msg) -> None:
        future = self._waiting.pop(msg.subject[len(self._inbox) + 1 :], None)
        if future is not None and not future.done():
            future.set_result(msg)

    async def ready(self) -> NATS:
        """The connection, once connected: waits out a reconnect for up to ``timeout`` seconds."""
        nc = await self.nc()
        if not self._connected.is_set():
            try:
                async with asyncio.timeout(self.timeout):
                    await self._connected.wait()
            except TimeoutError:
                msg = f"NATS at {', '.join(self.conn.servers)} is unreachable (reconnecting for {self.timeout:g}s)"
                raise BrokerError(msg) from None
        return nc

    async def send(self, requests: Sequence[Request], *, timeout: float | None = None) -> None:
        """Send every request, then wait for all replies (``Request.reply``).

        One round trip for up to ``_CHUNK`` requests; a longer batch goes in chunks, so that
        ``timeout`` bounds the wait for each chunk rather than for an unbounded batch.
        """
        for start in range(0, len(requests), _CHUNK):
            chunk = requests[start : start + _CHUNK]
            await self._send(chunk, timeout)
            # "No responders": no stream leader right now (a cluster electing one after a node
            # died). Nothing was stored, so sending again is safe; wait for a leader a while.
            give_up = asyncio.get_running_loop().time() + self.timeout
            delay = 0.05
            while (again := [r for r in chunk if r.reply is not None and (r.reply.headers or {}).get("Status") == "503"]) and (
                asyncio.get_running_loop().time() < give_up
            ):
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)
                await self._send(again, timeout)

    async def _send(self, requests: Sequence[Request], timeout: float | None) -> None:
        if not requests:
            return
        nc = await self.ready()
        futures: list[asyncio.Future[Msg]] = []
        keys: list[str] = []
        loop = asyncio.get_running_loop()
        try:
            for r in requests:
                self._next += 1
                key = str(self._next)
                future: asyncio.Future[Msg] = loop.create_future()
                self._waiting[key] = future
                futures.append(future)
                keys.append(key)
                await nc.publish(r.subject, r.payload, reply=f"{self._inbox}.{key}", headers=r.headers)
            wait = self.timeout if timeout is None else timeout
            _, pending = await asyncio.wait(futures, timeout=wait)
            if pending:
                msg = f"no reply from NATS within {wait:g}s for {len(pending)} of {len(futures)} request(s)"
                raise BrokerError(msg)
        except nats.errors.Error as exc:
            raise BrokerError(f"NATS request failed: {exc}") from exc
        finally:
            for key, f in zip(keys, futures, strict=True):
                if not f.done():
                    f.cancel()
                    self._waiting.pop(key, None)
        for r, f in zip(requests, futures, strict=False):
            r.reply = f.result()

    async def api(self, subject: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """A JetStream API call (``$JS.API.<subject>``): the decoded reply, or ``ApiError``."""
        r = Request(f"$JS.API.{subject}", json.dumps(body).encode() if body is not None else b"")
        await self.send([r])
        return check(r)

    async def close(self) -> None:
        nc, self._nc = self._nc, None
        shared, self._shared = self._shared, None
        if nc is None or shared is None:
            return
        shared.clients.discard(self)
        if shared.clients:
            with contextlib.suppress(Exception):
                await self._replies.unsubscribe()
            return
        _SHARED.pop(shared.key, None)
        with contextlib.suppress(Exception):
            await nc.close()


class _Shared:
    """One NATS connection for every client of this event loop with the same server and credentials.

    A producer's Server writes a job's record and publishes it at once: over one connection
    both go out in one write and come back in one read. Each client keeps its own reply inbox.
    """

    def __init__(self, key: tuple[Any, ...], loop: asyncio.AbstractEventLoop) -> None:
        self.key = key
        self.loop = weakref.ref(loop)
        self.nc: NATS | None = None
        self.clients: set[Client] = set()
        self.lock = asyncio.Lock()
        self.last_error: Exception | None = None

    @classmethod
    def of(cls, c: Connection) -> _Shared:
        loop = asyncio.get_running_loop()
        key: tuple[Any, ...] = (id(loop), tuple(c.servers), c.tls, c.user, c.password, c.token, c.nkey, c.creds)
        key += (c.tls_ca, c.tls_cert, c.tls_key, c.connect_timeout, c.name)
        shared = _SHARED.get(key)
        # A loop's id can be reused once it is gone: a connection belongs to its own loop only.
        if shared is None or shared.loop() is not loop or (shared.nc is not None and shared.nc.is_closed):
            shared = _SHARED[key] = cls(key, loop)
        return shared

    async def on_error(self, exc: Exception) -> None:
        # nats-py reports every failed (re)connect here; what explains a failed first connection
        # ("no servers available") is the refusal or TLS error, not the reset that follows it.
        telling = isinstance(exc, ssl.SSLError) or "authoriz" in str(exc).lower() or "authent" in str(exc).lower()
        if telling or self.last_error is None:
            self.last_error = exc
        log.debug("NATS connection: %s", exc)

    async def on_disconnected(self) -> None:
        for client in self.clients:
            client._connected.clear()

    async def on_reconnected(self) -> None:
        for client in self.clients:
            client.epoch += 1
            client._connected.set()


_SHARED: dict[tuple[Any, ...], _Shared] = {}


_SPACE = re.compile(rb"\s")


def _parse_header_lines(raw: bytes) -> dict[str, str]:
    """nats-py's header parser, same rules, with the whitespace check in C.

    nats-py tests each character of every header name in a Python generator; with a few headers
    on each delivered message and each read, that was a tenth of a worker's time.
    """
    out: dict[str, str] = {}
    for line in raw.split(b"\r\n"):
        name, sep, value = line.partition(b":")
        if not sep:
            continue
        name = name.strip()
        if _SPACE.search(name) or not name.isascii():
            continue
        out[name.decode("ascii")] = value.strip().decode("utf-8", "replace")
    return out


class _Direct:
    """Stands in for a subscription's message queue: hands each message to ``handle`` at once.

    nats-py queues every message of a subscription and wakes a task per message to run its
    callback; for the reply inbox, which only resolves futures, that hop cost about a third of
    the client's time per reply. Relies on nats-py 2.x internals (the dependency is pinned <3).
    """

    def __init__(self, sub: Any, handle: Callable[[Msg], None]) -> None:
        self._sub = sub
        self._handle = handle

    def put_nowait(self, msg: Msg) -> None:
        self._sub._pending_size -= len(msg.data)  # nats-py counts it in before queueing
        self._handle(msg)

    def qsize(self) -> int:
        return 0

    def empty(self) -> bool:
        return True

    async def join(self) -> None:
        return None


def _dispatch_directly(sub: Any, handle: Callable[[Msg], None]) -> None:
    if hasattr(sub, "_pending_queue") and hasattr(sub, "_pending_size"):
        sub._pending_queue = _Direct(sub, handle)
    else:  # another nats-py: the ordinary way, a task reading the queue

        async def read() -> None:
            async for msg in sub.messages:
                handle(msg)

        sub._tq_reader = asyncio.get_running_loop().create_task(read())


def check(r: Request) -> dict[str, Any]:
    """The JSON reply of a JetStream request, raising ``ApiError`` for an error reply."""
    assert r.reply is not None
    status = (r.reply.headers or {}).get("Status")
    if status == "503":
        msg = f"no JetStream stream answers on {r.subject!r} (is JetStream enabled on this server?)"
        raise ApiError(msg, status=503)
    data: dict[str, Any] = _decode(r.reply.data) if r.reply.data else {}
    error = data.get("error")
    if error:
        raise ApiError(error.get("description", "JetStream error"), error.get("err_code", 0), error.get("code", 0))
    return data


def _connect_error(where: str, exc: Exception, conn: Connection) -> str:
    text = str(exc) or type(exc).__name__
    lowered = text.lower()
    if "authorization" in lowered or "authentication" in lowered or ("user" in lowered and "invalid" in lowered):
        how = "user:password in the URL" if conn.user else "the token" if conn.token else "the nkey/creds file"
        if not (conn.user or conn.token or conn.nkey or conn.creds):
            how = "credentials: the server wants some (nats://user:password@host, ?token=, ?nkey= or ?creds=)"
        return f"NATS at {where} refused the connection ({text}): check {how}"
    if "tls" in lowered or "ssl" in lowered:
        how = "use tls:// for a TLS server, nats:// for a plain one, and ?tls_ca= for its CA"
        return f"TLS to NATS at {where} failed ({text}): {how}"
    return f"cannot connect to NATS at {where}: {text}"
