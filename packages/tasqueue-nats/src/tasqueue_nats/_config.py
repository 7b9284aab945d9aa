"""URL options and their validation.

``nats://host:4222`` and ``tls://host:4222`` (several servers: ``nats://a:4222,b:4222``) take
connection options and the backend's own, as query parameters or as keyword arguments of
``from_url`` (which win). Anything else is a ``ConfigurationError`` that names what is allowed,
so a typo never silently falls back to a default.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

from tasqueue.errors import ConfigurationError

__all__ = ["BROKER_OPTIONS", "CONNECTION_OPTIONS", "RESULTS_OPTIONS", "Connection", "parse_url"]

Kind = Literal["broker", "results"]
Parser = Callable[[str, str], Any]

DEFAULT_PREFIX = "tq"


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
    if number < 1:
        msg = f"option {name}={value!r} must be >= 1"
        raise ConfigurationError(msg)
    return number


def _text(name: str, value: str) -> str:
    return value


def _choice(*allowed: str) -> Parser:
    def parse(name: str, value: str) -> str:
        if value.lower() not in allowed:
            msg = f"option {name}={value!r} must be one of {', '.join(allowed)}"
            raise ConfigurationError(msg)
        return value.lower()

    return parse


#: Options of the connection and of the names of what is created, for brokers and results alike.
CONNECTION_OPTIONS: dict[str, Parser] = {
    "prefix": _text,
    "replicas": _count,
    "storage": _choice("file", "memory"),
    "token": _text,
    "nkey": _text,  # a file holding an nkey seed
    "creds": _text,  # a credentials (JWT + seed) file
    "tls_ca": _text,
    "tls_cert": _text,
    "tls_key": _text,
    "connect_timeout": _seconds,
    "timeout": _seconds,  # for each JetStream request
    "name": _text,
}
BROKER_OPTIONS: dict[str, Parser] = {
    "visibility_timeout": _seconds,
    "schedules": _choice("auto", "native", "stream"),
    "duplicate_window": _seconds,
    "max_ack_pending": _count,
}
RESULTS_OPTIONS: dict[str, Parser] = {"expiry": _seconds_or_none}
_OWN = {"broker": BROKER_OPTIONS, "results": RESULTS_OPTIONS}
_NAMES = {"broker": "broker", "results": "results store"}


@dataclass(frozen=True)
class Connection:
    """Where and how to connect, and the options shared by brokers and results stores."""

    servers: list[str]
    tls: bool = False
    prefix: str = DEFAULT_PREFIX
    replicas: int = 1
    storage: str = "file"
    user: str | None = None
    password: str | None = None
    token: str | None = None
    nkey: str | None = None
    creds: str | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    connect_timeout: float = 5.0
    timeout: float = 5.0
    name: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def parse_url(url: str, kind: Kind, overrides: Mapping[str, Any]) -> tuple[Connection, dict[str, Any]]:
    """Split ``url`` into a ``Connection`` and the backend's own options.

    ``overrides`` (``from_url`` keyword arguments) win over query parameters and are taken as
    they are, already typed.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in {"nats", "tls"}:
        msg = f"not a NATS URL: {url!r} (use nats://host:4222 or tls://host:4222)"
        raise ConfigurationError(msg)
    own = _OWN[kind]
    allowed = {**CONNECTION_OPTIONS, **own}
    values: dict[str, Any] = {}
    for name, raw in parse_qsl(parts.query, keep_blank_values=True):
        parser = allowed.get(name)
        if parser is None:
            msg = f"unknown option {name!r} in the NATS {_NAMES[kind]} URL; allowed: {', '.join(sorted(allowed))}"
            raise ConfigurationError(msg)
        values[name] = parser(name, raw)
    for name, value in overrides.items():
        if name not in allowed:
            msg = f"unknown option {name!r} for the NATS {_NAMES[kind]}; allowed: {', '.join(sorted(allowed))}"
            raise ConfigurationError(msg)
        values[name] = value
    netloc = parts.netloc
    user = password = None
    if "@" in netloc:
        auth, netloc = netloc.rsplit("@", 1)
        user, _, pw = auth.partition(":")
        user, password = unquote(user), (unquote(pw) if pw else None)
        if password is None and "token" not in values:
            # nats://TOKEN@host is the usual way to give a token.
            values["token"], user = user, None
    if not netloc:
        msg = f"the NATS URL {url!r} names no server (nats://host:4222)"
        raise ConfigurationError(msg)
    hosts = [h if ":" in h.rsplit("]", 1)[-1] else f"{h}:4222" for h in netloc.split(",")]
    servers = [f"{'tls' if scheme == 'tls' else 'nats'}://{h}" for h in hosts]
    tls = scheme == "tls" or any(values.get(k) for k in ("tls_ca", "tls_cert"))
    conn_values = {k: values.pop(k) for k in list(values) if k in CONNECTION_OPTIONS}
    if bool(conn_values.get("tls_cert")) != bool(conn_values.get("tls_key")):
        msg = "tls_cert and tls_key go together: give both (a client certificate and its key) or neither"
        raise ConfigurationError(msg)
    if sum(bool(x) for x in (user, conn_values.get("token"), conn_values.get("nkey"), conn_values.get("creds"))) > 1:
        msg = "give one way to authenticate: user:password, a token, an nkey seed file or a creds file"
        raise ConfigurationError(msg)
    if not conn_values.get("prefix", DEFAULT_PREFIX):
        msg = "option prefix must not be empty"
        raise ConfigurationError(msg)
    return Connection(servers, tls, user=user, password=password, **conn_values), values
