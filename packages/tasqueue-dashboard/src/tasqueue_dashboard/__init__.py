"""tasqueue-dashboard: a web page to watch and run tasqueue's queues, built on the Inspector.

    from tasqueue_dashboard import create_app

    dashboard = create_app(srv)                       # an ASGI app
    app.mount("/tasqueue", dashboard)                 # FastAPI / Starlette; any prefix

or on its own: ``tasqueue dashboard --broker redis://... --results redis://...``.
"""

from __future__ import annotations

from starlette.types import ASGIApp

from tasqueue.inspector import Inspector
from tasqueue.server import Server
from tasqueue_dashboard._app import Dashboard, Settings, build
from tasqueue_dashboard._preview import Formatter
from tasqueue_dashboard._security import Access, AuthHook, basic_auth_hook, mask_secrets, mask_url

__all__ = ["Access", "AuthHook", "Formatter", "create_app", "mask_secrets", "mask_url"]


def create_app(
    source: Server | Inspector,
    *,
    read_only: bool = False,
    basic_auth: tuple[str, str] | None = None,
    auth: AuthHook | None = None,
    formatter: Formatter | None = None,
    title: str = "tasqueue",
    label: str = "",
    refresh: float = 2.0,
    cache_ttl: float = 1.0,
) -> ASGIApp:
    """The dashboard of ``source``'s queues, as an ASGI app to mount under any path or serve alone.

    Args:
        source: A Server (its broker needs a control plane: ``memory://`` and Redis have one),
            or an Inspector over one. The dashboard neither starts nor closes it.
        read_only: Show everything, offer no action, refuse every POST.
        basic_auth: ``(user, password)``: ask for HTTP basic auth (over HTTPS only, in production).
        auth: The host application's check instead: ``auth(request)`` returns ``"operator"``
            (looks and acts), ``"viewer"`` (looks) or ``None`` (refused with 403); it may be async.
        formatter: ``formatter(message, data, kind)`` returns the text to show for a payload
            (``kind="payload"``) or a result (``"result"``), ``None`` for the default preview:
            decode your own format, or redact.
        title: The name in the page header.
        label: What the header says it is connected to; URLs in it have their passwords masked.
        refresh: Seconds between live updates of an open page (paused while its tab is hidden).
        cache_ttl: Seconds one backend answer serves every tab that asks.
    """
    if basic_auth is not None and auth is not None:
        msg = "give basic_auth or auth, not both"
        raise ValueError(msg)
    if refresh <= 0 or cache_ttl < 0:
        msg = f"refresh must be > 0 and cache_ttl >= 0 seconds, got {refresh} and {cache_ttl}"
        raise ValueError(msg)
    inspector = source if isinstance(source, Inspector) else Inspector(source)
    hook = basic_auth_hook(*basic_auth) if basic_auth is not None else auth
    settings = Settings(
        read_only=read_only,
        auth=hook,
        formatter=formatter,
        title=title,
        label=mask_secrets(label),
        refresh=refresh,
        basic_realm=basic_auth is not None,
    )
    return build(Dashboard(inspector, settings, cache_ttl))
