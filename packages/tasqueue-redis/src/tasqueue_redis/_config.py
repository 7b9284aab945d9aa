"""URL options, their validation, and building a redis-py client from a URL.

A broker URL and a results URL take the connection options below plus their own. Options come
as query parameters (``redis://host:6379/0?visibility_timeout=10``) or as keyword arguments of
``from_url`` (which win over the URL). Anything else is a ``ConfigurationError`` that names what
is allowed, so a typo never silently falls back to a default.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from tasqueue.errors import ConfigurationError

__all__ = ["BROKER_OPTIONS", "CLIENT_OPTIONS", "RESULTS_OPTIONS", "make_client", "parse_url"]

Kind = Literal["broker", "results"]
Parser = Callable[[str, str], Any]

DEFAULT_PREFIX = "tq"
DEFAULT_SOCKET_TIMEOUT = 5.0
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_MAX_CONNECTIONS = 50
DEFAULT_RETRIES = 10
#: No command is sent again later than this many seconds after its first try, however many
#: retries are left: a replay must land within the window its script remembers calls for.
RESEND_WINDOW = 15.0
#: Seconds the enqueue script remembers a call, so that a replay of it does nothing. Twice the
#: resend window: a first try may reach Redis late (a slow network), its replay early.
REPLAY_WINDOW = 2 * RESEND_WINDOW
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _bool(name: str, value: str) -> bool:
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    msg = f"option {name}={value!r} must be true or false"
    raise ConfigurationError(msg)


def _seconds(name: str, value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        msg = f"option {name}={value!r} must be a number of seconds"
        raise ConfigurationError(msg) from None
    if seconds <= 0:
        msg = f"option {name}={value!r} must be > 0 seconds"
        raise ConfigurationError(msg)
    return seconds


def _seconds_or_none(name: str, value: str) -> float | None:
    return None if value.lower() in {"none", ""} else _seconds(name, value)


def _count(name: str, value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        msg = f"option {name}={value!r} must be a whole number"
        raise ConfigurationError(msg) from None
    if number < 0:
        msg = f"option {name}={value!r} must be >= 0"
        raise ConfigurationError(msg)
    return number


def _count_or_none(name: str, value: str) -> int | None:
    return None if value.lower() in {"none", ""} else _count(name, value)


def _text(name: str, value: str) -> str:
    return value


def _cert_reqs(name: str, value: str) -> str:
    if value.lower() not in {"none", "optional", "required"}:
        msg = f"option {name}={value!r} must be none, optional or required"
        raise ConfigurationError(msg)
    return value.lower()


#: Options of the connection, for brokers and results stores alike.
CLIENT_OPTIONS: dict[str, Parser] = {
    "cluster": _bool,
    "prefix": _text,
    "db": _count,
    "username": _text,
    "password": _text,
    "socket_timeout": _seconds_or_none,
    "socket_connect_timeout": _seconds,
    "max_connections": _count,
    "retries": _count,
    "health_check_interval": _count,
    "client_name": _text,
}
#: TLS options, only for ``rediss://``.
TLS_OPTIONS: dict[str, Parser] = {
    "ssl_cert_reqs": _cert_reqs,
    "ssl_ca_certs": _text,
    "ssl_certfile": _text,
    "ssl_keyfile": _text,
    "ssl_check_hostname": _bool,
}
BROKER_OPTIONS: dict[str, Parser] = {"visibility_timeout": _seconds}
RESULTS_OPTIONS: dict[str, Parser] = {
    "expiry": _seconds_or_none,
    "list_expiry": _seconds_or_none,
    "list_limit": _count_or_none,
}
_OWN = {"broker": BROKER_OPTIONS, "results": RESULTS_OPTIONS}
_NAMES = {"broker": "broker", "results": "results store"}


def parse_url(url: str, kind: Kind, overrides: Mapping[str, Any]) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """Split ``url`` into a bare connection URL, connection options and the backend's own options.

    ``overrides`` (``from_url`` keyword arguments) win over query parameters and are taken as
    they are, already typed.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in {"redis", "rediss", "unix"}:
        msg = f"tasqueue-redis takes redis://, rediss:// and unix:// URLs, not {url!r}"
        raise ConfigurationError(msg)
    own = _OWN[kind]
    other: Kind = "results" if kind == "broker" else "broker"
    allowed = {**CLIENT_OPTIONS, **own, **(TLS_OPTIONS if scheme == "rediss" else {})}
    given = dict(parse_qsl(parts.query, keep_blank_values=True))
    for name in {*given, *overrides}:
        if name in allowed:
            continue
        if name in _OWN[other]:
            msg = f"{name!r} is an option of the redis {_NAMES[other]}, not of the {_NAMES[kind]} ({url!r})"
        elif name in TLS_OPTIONS:
            msg = f"{name!r} needs a TLS connection: use a rediss:// URL instead of {url!r}"
        else:
            msg = f"unknown option {name!r} for a redis {_NAMES[kind]} ({url!r}); allowed: {', '.join(sorted(allowed))}"
        raise ConfigurationError(msg)
    values = {name: allowed[name](name, value) for name, value in given.items()}
    values.update(overrides)
    client = {k: v for k, v in values.items() if k not in own}
    backend = {k: v for k, v in values.items() if k in own}
    bare = urlunsplit((parts.scheme, parts.netloc, parts.path, "", parts.fragment))
    return bare, client, backend


def make_client(url: str, options: Mapping[str, Any]) -> Any:
    """A ``redis.asyncio.Redis`` (or ``RedisCluster`` with ``cluster=true``) for a bare URL."""
    from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
    from redis.backoff import EqualJitterBackoff

    from tasqueue_redis._errors import GuardedRetry, target_of

    opts = dict(options)
    opts.pop("prefix", None)
    cluster = bool(opts.pop("cluster", False))
    retries = opts.pop("retries", DEFAULT_RETRIES)
    kwargs: dict[str, Any] = {
        "socket_timeout": opts.pop("socket_timeout", DEFAULT_SOCKET_TIMEOUT),
        "socket_connect_timeout": opts.pop("socket_connect_timeout", DEFAULT_CONNECT_TIMEOUT),
        # Replays are safe: every script is idempotent (see _lua.py). Jitter keeps a crowd of
        # workers from reconnecting in lockstep after a restart.
        "retry": GuardedRetry(EqualJitterBackoff(cap=1.0, base=0.01), retries, target_of(url)),
        **opts,
    }
    kwargs.setdefault("max_connections", DEFAULT_MAX_CONNECTIONS)
    scheme = urlsplit(url).scheme.lower()
    try:
        if cluster:
            if scheme == "unix":
                msg = f"Redis Cluster is reached over TCP; cluster=true does not work with {url!r}"
                raise ConfigurationError(msg)
            if kwargs.pop("db", 0) != 0:
                msg = f"Redis Cluster has only database 0 ({url!r})"
                raise ConfigurationError(msg)
            return RedisCluster.from_url(url, **kwargs)
        pool = BlockingConnectionPool.from_url(url, **kwargs)
        return Redis.from_pool(pool)
    except (ValueError, TypeError) as exc:
        msg = f"cannot build a redis client for {url!r}: {exc}"
        raise ConfigurationError(msg) from exc


def socket_timeout_of(client: Any) -> float | None:
    """The read timeout of a client's connections, where it can be found (``None``: none or unknown)."""
    pool = getattr(client, "connection_pool", None)
    if pool is not None:
        value = pool.connection_kwargs.get("socket_timeout")
        return None if value is None else float(value)
    kwargs = getattr(getattr(client, "nodes_manager", None), "connection_kwargs", None)
    if isinstance(kwargs, dict) and kwargs.get("socket_timeout") is not None:
        return float(kwargs["socket_timeout"])
    return None


def decodes_responses(client: Any) -> bool:
    """Whether a client turns replies into ``str`` (the backends need ``bytes``)."""
    get_encoder = getattr(client, "get_encoder", None)
    if get_encoder is None:
        return False
    return bool(getattr(get_encoder(), "decode_responses", False))
