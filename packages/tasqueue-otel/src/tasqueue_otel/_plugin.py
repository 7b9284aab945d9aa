"""``OtelPlugin``, and the rule that one Server gets one OtelMiddleware however many ways it is asked for."""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

from tasqueue import ConfigurationError, hookimpl

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.propagators.textmap import TextMapPropagator
    from opentelemetry.trace import TracerProvider

    from tasqueue import Server
    from tasqueue.hookspecs import RegisterMiddleware
    from tasqueue_otel.middleware import OtelMiddleware

__all__ = ["OtelPlugin", "install", "installed"]

# Which plugin instrumented each Server (None: the entry point). Weak, so a Server is not kept
# alive by having been instrumented.
_owners: weakref.WeakKeyDictionary[Server, OtelPlugin | None] = weakref.WeakKeyDictionary()
_middleware: weakref.WeakKeyDictionary[Server, OtelMiddleware] = weakref.WeakKeyDictionary()


class OtelPlugin:
    """tasqueue-otel with explicit providers: ``Server(plugins=[OtelPlugin(tracer_provider=tp)])``.

    The Go original's ``TraceProvider`` option. Given to a Server, it replaces the installed
    entry point's instrumentation for that Server (never both: one span per enqueue and run).

    Args:
        tracer_provider: Where spans go; the global provider when ``None``.
        meter_provider: Where metrics go; the global provider when ``None``.
        propagator: How trace context is carried in ``JobMessage.headers``; the global
            propagator when ``None``.
    """

    def __init__(
        self,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        propagator: TextMapPropagator | None = None,
    ) -> None:
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        self.propagator = propagator

    # tryfirst: explicit configuration runs before the entry point's trylast hook, which then yields.
    @hookimpl(tryfirst=True)
    def tasqueue_register_middleware(self, server: Server, register: RegisterMiddleware) -> None:
        """Install ``OtelMiddleware`` with this plugin's providers."""
        install(server, register, self)

    def __repr__(self) -> str:
        return f"OtelPlugin(tracer_provider={self.tracer_provider!r}, meter_provider={self.meter_provider!r})"


def install(server: Server, register: RegisterMiddleware, plugin: OtelPlugin | None) -> None:
    """Register one ``OtelMiddleware`` on ``server``, configured by ``plugin`` (None: global providers).

    The first call for a Server wins. Later calls from the entry point are no-ops; a second
    explicit ``OtelPlugin`` is a configuration error rather than a silent choice between two
    sets of providers.
    """
    if server in _owners:
        owner = _owners[server]
        if plugin is None:
            return
        if owner is None:
            # Hook ordering (tryfirst / trylast) makes this unreachable; fail loudly if it changes.
            msg = f"{plugin!r} was applied after the installed tasqueue-otel entry point had instrumented the Server"
            raise ConfigurationError(msg)
        msg = (
            f"two tasqueue-otel plugins were given to one Server: {owner!r} and {plugin!r}; "
            "pass one OtelPlugin with the providers you want"
        )
        raise ConfigurationError(msg)
    from tasqueue_otel.middleware import OtelMiddleware

    if plugin is None:
        middleware = OtelMiddleware()
    else:
        middleware = OtelMiddleware(
            tracer_provider=plugin.tracer_provider,
            meter_provider=plugin.meter_provider,
            propagator=plugin.propagator,
        )
    _owners[server] = plugin
    _middleware[server] = middleware
    register(middleware)


def installed(server: Server) -> OtelMiddleware | None:
    """The ``OtelMiddleware`` a tasqueue-otel plugin installed on ``server``, if any."""
    return _middleware.get(server)
