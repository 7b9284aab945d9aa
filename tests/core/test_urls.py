"""``tasqueue.urls``: the URL and options parsing offered to backend authors."""

from __future__ import annotations

import pytest

from tasqueue import ConfigurationError
from tasqueue.urls import count, flag, optional, parse_backend_url, seconds

OPTIONS = {"visibility_timeout": seconds, "limit": optional(count), "tls": flag, "name": str}


def test_a_url_splits_into_parts_and_typed_options() -> None:
    parsed = parse_backend_url("sqlite:///var/lib/jobs.db?visibility_timeout=2.5&limit=none&tls=yes&name=a", OPTIONS)
    assert (parsed.scheme, parsed.netloc, parsed.path, parsed.name) == ("sqlite", "", "/var/lib/jobs.db", "/var/lib/jobs.db")
    assert parsed.bare == "sqlite:///var/lib/jobs.db"
    assert parsed.options == {"visibility_timeout": 2.5, "limit": None, "tls": True, "name": "a"}
    shared = parse_backend_url("MEMORY://shared/", {})
    assert (shared.scheme, shared.name, shared.options) == ("memory", "shared", {})


def test_keyword_overrides_win_and_are_taken_as_typed() -> None:
    parsed = parse_backend_url("x://h?visibility_timeout=2&limit=5", OPTIONS, {"visibility_timeout": 9, "limit": None})
    assert parsed.options == {"visibility_timeout": 9, "limit": None}


def test_mistakes_say_what_is_allowed() -> None:
    with pytest.raises(ConfigurationError, match=r"unknown option 'vt' for a x broker .*; allowed: limit, name, tls"):
        parse_backend_url("x://h?vt=1", OPTIONS, what="x broker")
    with pytest.raises(ConfigurationError, match="unknown option 'vt'"):
        parse_backend_url("x://h", OPTIONS, {"vt": 1})
    with pytest.raises(ConfigurationError, match=r"visibility_timeout='0'.*greater than 0"):
        parse_backend_url("x://h?visibility_timeout=0", OPTIONS)
    with pytest.raises(ConfigurationError, match=r"visibility_timeout='nan'.*greater than 0"):
        parse_backend_url("x://h?visibility_timeout=nan", OPTIONS)
    with pytest.raises(ConfigurationError, match=r"limit='-3'.*whole number, 0 or more, or none"):
        parse_backend_url("x://h?limit=-3", OPTIONS)
    with pytest.raises(ConfigurationError, match=r"tls='maybe'.*true or false"):
        parse_backend_url("x://h?tls=maybe", OPTIONS)
    with pytest.raises(ConfigurationError, match=r"a x store takes a://, b:// URLs, not 'c://h'"):
        parse_backend_url("c://h", OPTIONS, schemes={"b", "a"}, what="x store")
    with pytest.raises(ConfigurationError, match="cannot read the options"):
        parse_backend_url("x://h?novalue", OPTIONS)


def test_the_other_halfs_options_are_ignored_and_hints_explain_refusals() -> None:
    parsed = parse_backend_url("x://h?expiry=5&tls=on", OPTIONS, {"expiry": 1}, ignore={"expiry"})
    assert parsed.options == {"tls": True}
    with pytest.raises(
        ConfigurationError, match=r"option 'ssl_ca' is not allowed for a backend \('x://h\?ssl_ca=f'\): needs rediss://"
    ):
        parse_backend_url("x://h?ssl_ca=f", OPTIONS, hints={"ssl_ca": "needs rediss://"})
