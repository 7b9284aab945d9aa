"""The ``tasqueue`` entry point: installed, tasqueue-otel instruments every Server with the global providers.

Imports nothing but tasqueue here; OpenTelemetry is imported when a Server is built. An
``OtelPlugin`` given to ``Server(plugins=[...])`` takes precedence over this one, and
``TASQUEUE_DISABLE_PLUGINS=otel`` keeps it from loading.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tasqueue import hookimpl

if TYPE_CHECKING:
    from tasqueue import Server
    from tasqueue.hookspecs import RegisterMiddleware


# trylast: an explicit OtelPlugin (tryfirst) has installed its middleware by now, and this yields to it.
@hookimpl(trylast=True)
def tasqueue_register_middleware(server: Server, register: RegisterMiddleware) -> None:
    """Install ``OtelMiddleware`` with the global providers, unless an explicit ``OtelPlugin`` did."""
    from tasqueue_otel._plugin import install

    install(server, register, None)
