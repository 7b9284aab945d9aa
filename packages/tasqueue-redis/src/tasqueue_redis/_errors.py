"""Errors that retrying cannot fix, and words for the ones an operator has to act on.

A connection error is usually passing (a restart, a network blip) and worth re-sending. A few
are not: Redis refusing the credentials, a certificate that does not verify, a TLS client
talking to a plaintext port or the reverse. Retrying those only delays the error (a minute,
with the default retries) and fills the server's ACL log, so they end the retries at once as
``UnrecoverableError`` and say what to change.

Two of them look like ordinary failures from the client's side: TLS to a plaintext port hangs
in the handshake until the connect timeout, and plaintext to a TLS port is reset. On the first
such failure of a client that never connected, one quick probe of the port tells them apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from redis.asyncio.retry import Retry
from redis.exceptions import AuthenticationError, OutOfMemoryError, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tasqueue_redis._config import RESEND_WINDOW

__all__ = ["GuardedRetry", "Target", "UnrecoverableError", "explain", "target_of", "unrecoverable"]

_PROBE_TIMEOUT = 1.0


class UnrecoverableError(RedisError):
    """A connection failure that no retry can fix; its text says what to change.

    Not a ``redis.ConnectionError``, so that no retry layer (redis-py's or the lanes') sends
    the command again.
    """


class Target:
    """Where a client connects, for the probe: host, port, and whether it speaks TLS."""

    __slots__ = ("connected", "host", "port", "tls")

    def __init__(self, host: str, port: int, *, tls: bool) -> None:
        self.host = host
        self.port = port
        self.tls = tls
        self.connected = False  # once a command had its reply, a failure is not a wrong port

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _known(exc: BaseException, where: str) -> str | None:
    """What to fix, for errors that say it themselves."""
    if isinstance(exc, AuthenticationError):
        return (
            f"Redis at {where} refused the credentials ({exc}): check the username and password in the URL "
            "(redis://user:password@host:port/db), or the ACL user on the server (ACL SETUSER ... on >password)"
        )
    for cause in _chain(exc):
        if isinstance(cause, ssl.SSLCertVerificationError):
            return (
                f"the TLS certificate of {where} did not verify ({cause}): give the CA that "
                "signed it as ssl_ca_certs=/path/ca.crt (and ssl_check_hostname=false if the certificate names "
                "another host)"
            )
        if isinstance(cause, ssl.SSLError):
            reason = (cause.reason or "").lower()
            if any(sign in reason for sign in ("wrong_version", "record_layer", "packet_length", "http_request")):
                return f"{where} does not speak TLS ({cause}): a plaintext port; use redis:// for it, or the server's tls-port"
            return f"the TLS handshake with {where} failed ({cause}): check ssl_certfile, ssl_keyfile and the server's TLS setup"
    return None


async def _speaks_plain_redis(target: Target) -> bool:
    try:
        async with asyncio.timeout(_PROBE_TIMEOUT):
            reader, writer = await asyncio.open_connection(target.host, target.port)
            try:
                writer.write(b"PING\r\n")
                answer = await reader.read(64)
            finally:
                writer.close()
    except (OSError, TimeoutError):
        return False
    return answer.startswith((b"+PONG", b"-NOAUTH", b"-ERR", b"-DENIED", b"-WRONGPASS"))


async def _speaks_tls(target: Target) -> bool:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        async with asyncio.timeout(_PROBE_TIMEOUT):
            _, writer = await asyncio.open_connection(target.host, target.port, ssl=context)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    except (OSError, TimeoutError):
        return False
    return True


async def unrecoverable(exc: BaseException, target: Target | None, where: str = "the server") -> UnrecoverableError | None:
    """The error to raise instead of retrying ``exc``, or ``None`` if retrying may help."""
    for cause in _chain(exc):
        if isinstance(cause, UnrecoverableError):
            return cause  # found at a lower layer (redis-py wraps it in a ConnectionError)
    if target is not None:
        where = str(target)
    reason = _known(exc, where)
    if reason is None and target is not None and not target.connected:
        if target.tls and isinstance(exc, (RedisTimeoutError, TimeoutError)) and await _speaks_plain_redis(target):
            reason = f"{where} answers in plaintext, not TLS (the handshake timed out): use redis:// for it, or the tls-port"
        elif (
            not target.tls
            and isinstance(exc, (RedisConnectionError, ConnectionError))
            and not isinstance(exc.__context__ or exc, ConnectionRefusedError)
            and await _speaks_tls(target)
        ):
            reason = f"{where} speaks TLS (it closed a plaintext connection: {exc}): use a rediss:// URL for it"
    if reason is None:
        return None
    error = UnrecoverableError(reason)
    error.__cause__ = exc
    return error


def explain(exc: BaseException) -> str:
    """The text of a redis-py error, and what to do where the error is a known condition."""
    if isinstance(exc, OutOfMemoryError):
        return (
            f"Redis is out of memory and refuses new data ({exc}); nothing was written. Free memory or raise "
            "maxmemory; finished jobs' records are bounded by the results store's list_limit and expiry"
        )
    return str(exc)


def target_of(url: str) -> Target | None:
    """The probe target of a TCP URL (``None`` for unix sockets)."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in {"redis", "rediss"}:
        return None
    return Target(parts.hostname or "localhost", parts.port or 6379, tls=parts.scheme.lower() == "rediss")


class _GiveUp(RedisError):
    """Not a retryable error: it ends redis-py's retry loop so that the last real error can be raised."""


class GuardedRetry(Retry):
    """redis-py's ``Retry``, except that it stops at errors no retry fixes, and sends nothing
    again later than ``RESEND_WINDOW`` after the first try (see ``_config``)."""

    def __init__(self, backoff: Any, retries: int, target: Target | None) -> None:
        super().__init__(backoff, retries)
        self.target = target

    async def call_with_retry(self, do: Callable[[], Awaitable[Any]], fail: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        started = loop.time()
        last: list[BaseException] = []
        target = self.target

        async def guarded() -> Any:
            if last and loop.time() - started > RESEND_WINDOW:
                raise _GiveUp
            try:
                result = await do()
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                fatal = await unrecoverable(exc, target)
                if fatal is not None:
                    raise fatal from exc
                last[:] = [exc]
                raise
            return result

        try:
            return await super().call_with_retry(guarded, fail, *args, **kwargs)
        except _GiveUp:
            raise last[0] from None
