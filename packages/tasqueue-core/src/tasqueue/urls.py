"""Backend URLs and their options: the parsing every backend's ``from_url`` needs.

A backend URL names a place and carries options as query parameters
(``memory://shared?visibility_timeout=10``, ``sqlite:///var/lib/jobs.db?expiry=3600``).
``parse_backend_url`` splits it, converts each option with the parser it is declared with, lets
keyword arguments of ``from_url`` win over the query, and turns every mistake into a
``ConfigurationError`` that names what is allowed, so that a typo never falls back to a default::

    OPTIONS = {"visibility_timeout": seconds, "expiry": optional(seconds)}

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> Self:
        parsed = parse_backend_url(url, OPTIONS, overrides, schemes={"sqlite"}, what="sqlite broker")
        return cls(parsed.path, **parsed.options)

A parser takes the option's text and returns its value, raising ``ValueError`` when the text is
not valid: ``int``, ``float`` and ``str`` work as they are, and this module has ``seconds``,
``count``, ``flag`` and ``optional(...)``.

One URL may name both halves of a backend (``Server("mybackend://host")`` uses it for the broker
and the results store when one plugin provides both): pass the other half's options as
``ignore``, so that each half takes its own options from the shared URL and skips the other's.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from tasqueue.errors import ConfigurationError

__all__ = ["BackendURL", "OptionParser", "count", "flag", "optional", "parse_backend_url", "seconds"]

#: Turns an option's text into its value; raises ``ValueError`` with a reason when it cannot.
OptionParser = Callable[[str], Any]

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_NONE = frozenset({"", "none"})


def seconds(text: str) -> float:
    """A duration in seconds, greater than zero: ``"30"``, ``"0.5"``."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):  # NaN too
        msg = "must be a number of seconds greater than 0"
        raise ValueError(msg)
    return value


def count(text: str) -> int:
    """A whole number, zero or more: ``"100000"``."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        msg = "must be a whole number, 0 or more"
        raise ValueError(msg)
    return value


def flag(text: str) -> bool:
    """A boolean: ``true``/``false``, ``yes``/``no``, ``on``/``off``, ``1``/``0``."""
    lowered = text.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    msg = "must be true or false"
    raise ValueError(msg)


def optional(parser: OptionParser) -> OptionParser:
    """``parser``, or ``None`` for the text ``none`` (or nothing): ``optional(seconds)`` for "keep forever"."""

    def parse(text: str) -> Any:
        if text.lower() in _NONE:
            return None
        try:
            return parser(text)
        except ValueError as exc:
            msg = f"{exc}, or none"
            raise ValueError(msg) from None

    return parse


@dataclass(frozen=True, slots=True)
class BackendURL:
    """A parsed backend URL.

    Attributes:
        url: The URL as given.
        scheme: Its scheme, lower-cased (``"sqlite"``).
        netloc: The part after ``//`` up to the path (``"user:pw@host:6379"``, or a name).
        path: The path (``"/var/lib/jobs.db"``, ``"/0"``), ``""`` if none.
        bare: The URL without its query: what to hand a client library that parses its own.
        options: Every option given, parsed, with the overrides applied.
    """

    url: str
    scheme: str
    netloc: str
    path: str
    bare: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """``netloc`` and ``path`` without a trailing slash: ``"shared"`` for ``memory://shared``."""
        return (self.netloc + self.path).rstrip("/")


def parse_backend_url(
    url: str,
    options: Mapping[str, OptionParser],
    overrides: Mapping[str, Any] | None = None,
    *,
    schemes: Collection[str] | None = None,
    what: str = "backend",
    ignore: Collection[str] = (),
    hints: Mapping[str, str] | None = None,
) -> BackendURL:
    """Split ``url`` and parse its query options.

    Args:
        url: The URL to parse.
        options: The options this backend takes, each with its parser.
        overrides: Keyword arguments of ``from_url``: they win over the query and are taken as
            they are (already typed), but must still be known options.
        schemes: The schemes this backend serves; any other is an error. ``None``: any.
        what: What the URL is for, as the error messages say it (``"sqlite broker"``).
        ignore: Options that are not this backend's but may appear in a URL it shares (the
            other half's): dropped without error.
        hints: A reason to give for an option that is not allowed here, by name (``{"ssl_ca_certs":
            "needs a rediss:// URL"}``), instead of the list of allowed options.

    Raises:
        ConfigurationError: the scheme is not one of ``schemes``, an option is unknown, or its
            value does not parse.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if schemes is not None and scheme not in schemes:
        allowed = ", ".join(f"{s}://" for s in sorted(schemes))
        msg = f"a {what} takes {allowed} URLs, not {url!r}"
        raise ConfigurationError(msg)
    overrides = overrides or {}
    try:
        given = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        msg = f"cannot read the options of {url!r}: write them as ?name=value&other=value"
        raise ConfigurationError(msg) from None
    for name in [name for name, _ in given] + list(overrides):
        if name in options or name in ignore:
            continue
        reason = (hints or {}).get(name)
        if reason is None:
            known = ", ".join(sorted(options)) or "none"
            msg = f"unknown option {name!r} for a {what} ({url!r}); allowed: {known}"
        else:
            msg = f"option {name!r} is not allowed for a {what} ({url!r}): {reason}"
        raise ConfigurationError(msg)
    values: dict[str, Any] = {}
    for name, text in given:
        if name in ignore:
            continue
        try:
            values[name] = options[name](text)
        except ValueError as exc:
            msg = f"option {name}={text!r} in {url!r} is not valid: {exc}"
            raise ConfigurationError(msg) from None
    values.update((name, value) for name, value in overrides.items() if name not in ignore)
    bare = url.split("?", 1)[0]  # as written: urlunsplit would turn sqlite:///x into sqlite:/x
    return BackendURL(url=url, scheme=scheme, netloc=parts.netloc, path=parts.path, bare=bare, options=values)
