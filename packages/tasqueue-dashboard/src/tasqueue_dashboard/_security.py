"""Who may look and who may act: basic auth or the host's hook, CSRF tokens, masked URLs, headers."""

from __future__ import annotations

import base64
import binascii
import inspect
import re
import secrets
from collections.abc import Awaitable, Callable
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from starlette.requests import Request

__all__ = ["Access", "AuthHook", "csrf_token", "mask_secrets", "mask_url"]

#: What a request may do: ``"operator"`` looks and acts, ``"viewer"`` only looks, ``None`` is refused.
Access = Literal["operator", "viewer"] | None
#: The host application's check: called with each request, returns its access (or an awaitable of it).
AuthHook = Callable[[Request], Access | Awaitable[Access]]

CSRF_COOKIE = "tasqueue_dashboard_csrf"
CSRF_FIELD = "csrf"

# Headers every page carries. Nothing inline and nothing from elsewhere: scripts and styles come
# from the package's own static files, so a script injected into a payload preview cannot run.
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
}


def mask_url(url: str) -> str:
    """``url`` with its password (and a lone token in the user part) replaced by ``****``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "****"
    if "@" not in parts.netloc:
        return url
    userinfo, _, host = parts.netloc.rpartition("@")
    user, sep, _ = userinfo.partition(":")
    masked = f"{user}:****@{host}" if sep else f"****@{host}"
    return urlunsplit((parts.scheme, masked, parts.path, parts.query, parts.fragment))


_URL_WITH_USERINFO = re.compile(r"\b([a-z][a-z0-9+.-]*://)([^\s/@]+)@", re.IGNORECASE)


def mask_secrets(text: str) -> str:
    """Every URL in ``text`` (an error message, say) with its credentials masked."""

    def hide(m: re.Match[str]) -> str:
        user, sep, _ = m.group(2).partition(":")
        return f"{m.group(1)}{user}:****@" if sep else f"{m.group(1)}****@"

    return _URL_WITH_USERINFO.sub(hide, text)


def basic_auth_hook(user: str, password: str) -> AuthHook:
    """An auth hook that lets in the one user with this password (HTTP basic auth)."""
    expected = f"{user}:{password}".encode()

    def check(request: Request) -> Access:
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            given = base64.b64decode(value.strip(), validate=True)
        except (binascii.Error, ValueError):
            return None
        return "operator" if secrets.compare_digest(given, expected) else None

    return check


async def access_of(hook: AuthHook | None, request: Request) -> Access:
    if hook is None:
        return "operator"
    answer = hook(request)
    if inspect.isawaitable(answer):
        answer = await answer
    if answer not in ("operator", "viewer", None):
        msg = f"the dashboard's auth hook must return 'operator', 'viewer' or None, not {answer!r}"
        raise TypeError(msg)
    return answer


def csrf_token(request: Request) -> tuple[str, bool]:
    """The request's CSRF token, and whether it is new (then the response must set the cookie)."""
    token = request.cookies.get(CSRF_COOKIE, "")
    if len(token) >= 32:
        return token, False
    return secrets.token_urlsafe(32), True


def csrf_ok(request: Request, submitted: str) -> bool:
    """A POST carries the token of its own cookie (double submit) and, if the browser says, comes from here."""
    cookie = request.cookies.get(CSRF_COOKIE, "")
    if len(cookie) < 32 or not secrets.compare_digest(cookie.encode(), submitted.encode()):
        return False
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.headers.get("host", "")
