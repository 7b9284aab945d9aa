"""The plugin manager: loads plugins, collects their URL schemes and middleware.

Installed plugins load from the ``tasqueue`` entry-point group unless a Server is built with
``load_entrypoints=False``; ``TASQUEUE_DISABLE_PLUGINS=name,other`` blocks plugins by entry-point
name. The in-memory backend is registered the same way as any plugin, as ``memory``.

It also pairs a Server's broker with its results store: a broker URL alone names both halves
when a results store is registered for its scheme too, and a pair whose halves cannot see each
other's jobs across processes gets a ``ConfigurationWarning``.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from urllib.parse import urlsplit

import pluggy

from tasqueue import hookspecs
from tasqueue.errors import ConfigurationError, ConfigurationWarning, PluginConflictError, UnknownSchemeError

if TYPE_CHECKING:
    from tasqueue.broker import Broker
    from tasqueue.middleware import Middleware
    from tasqueue.results import Results
    from tasqueue.server import Server

__all__ = ["ENTRY_POINT_GROUP", "PluginHost", "SchemeRegistry"]

log = logging.getLogger("tasqueue.plugins")

ENTRY_POINT_GROUP = "tasqueue"
DISABLE_ENV = "TASQUEUE_DISABLE_PLUGINS"

# Only a hint for the error message: core knows no backend, but a newcomer typing
# redis:// deserves to be told which package to install.
_WELL_KNOWN = {
    "redis": "tasqueue-redis",
    "rediss": "tasqueue-redis",
    "unix": "tasqueue-redis",
    "nats": "tasqueue-nats",
    "tls": "tasqueue-nats",
}

T = TypeVar("T")


def _describe(factory: Callable[..., Any]) -> str:
    module = getattr(factory, "__module__", "?")
    name = getattr(factory, "__qualname__", repr(factory))
    return f"{module}.{name}"


class SchemeRegistry(Generic[T]):
    """URL scheme -> factory, filled by a register hook."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.factories: dict[str, Callable[..., T]] = {}

    def register(self, scheme: str, factory: Callable[..., T]) -> None:
        """The ``register`` callback handed to plugins."""
        scheme = scheme.lower()
        existing = self.factories.get(scheme)
        if existing is not None and existing is not factory:
            msg = (
                f"two plugins registered a {self.kind} for '{scheme}://': "
                f"{_describe(existing)} and {_describe(factory)}; uninstall one, or block it with "
                f"{DISABLE_ENV}=<entry point name>"
            )
            raise PluginConflictError(msg)
        self.factories[scheme] = factory

    def create(self, url: str, **options: Any) -> T:
        """Build a backend for ``url`` with the factory registered for its scheme."""
        scheme = urlsplit(url).scheme.lower()
        if not scheme:
            msg = f"{self.kind} URL {url!r} has no scheme; write it like 'memory://' or 'redis://127.0.0.1:6379/0'"
            raise UnknownSchemeError(msg)
        factory = self.factories.get(scheme)
        if factory is None:
            installed = ", ".join(f"{s}://" for s in sorted(self.factories)) or "none"
            msg = f"no {self.kind} registered for '{scheme}://' (installed: {installed})"
            package = _WELL_KNOWN.get(scheme)
            if package:
                msg += f"; install it with: pip install {package}"
            raise UnknownSchemeError(msg)
        return factory(url, **options)


class PluginHost:
    """One pluggy manager per Server, with the built-in plugins, entry points and explicit plugins."""

    def __init__(self, plugins: Iterable[object] = (), *, load_entrypoints: bool = True) -> None:
        from tasqueue import memory  # the built-in backend is a plugin like any other

        pm = pluggy.PluginManager(hookspecs.PROJECT)
        pm.add_hookspecs(hookspecs)
        for name in filter(None, (n.strip() for n in os.environ.get(DISABLE_ENV, "").split(","))):
            pm.set_blocked(name)
        if not pm.is_blocked("memory"):
            pm.register(memory, name="memory")
        if load_entrypoints:
            pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
        for plugin in plugins:
            pm.register(plugin)
        # A hookimpl whose name matches no spec is a typo; say so now rather than never calling it.
        pm.check_pending()
        self.pm = pm
        self._brokers: SchemeRegistry[Broker] | None = None
        self._results: SchemeRegistry[Results] | None = None

    @property
    def brokers(self) -> SchemeRegistry[Broker]:
        """Broker factories by scheme (collected on first use)."""
        if self._brokers is None:
            registry: SchemeRegistry[Broker] = SchemeRegistry("broker")
            self.pm.hook.tasqueue_register_brokers(register=registry.register)
            self._brokers = registry
        return self._brokers

    @property
    def results(self) -> SchemeRegistry[Results]:
        """Results-store factories by scheme (collected on first use)."""
        if self._results is None:
            registry: SchemeRegistry[Results] = SchemeRegistry("results store")
            self.pm.hook.tasqueue_register_results(register=registry.register)
            self._results = registry
        return self._results

    def backends(self, broker: str | Broker, results: str | Results | None) -> tuple[Broker, Results]:
        """Build a Server's broker and results store from URLs or take the objects given.

        Without ``results``, a broker URL whose scheme also has a results store registered
        names both halves (one backend, as the user wrote it); otherwise the results go to a
        private ``memory://``.
        """
        made_broker = self.brokers.create(broker) if isinstance(broker, str) else broker
        if results is None:
            made_results = self._results_beside(broker)
        else:
            made_results = self.results.create(results) if isinstance(results, str) else results
        if not getattr(made_broker, "process_local", False) and getattr(made_results, "process_local", False):
            # Workers in other processes record outcomes in their own store: this Server's
            # get_job and wait would never see them, and nothing else would say so.
            msg = (
                f"the results store {type(made_results).__name__} lives in this process only, but the broker "
                f"{type(made_broker).__name__} hands jobs to workers in other processes: what those workers record, "
                "this Server never sees (get_job, wait and get_result time out or raise NotFoundError). Pass a "
                "results store they share, e.g. Server(broker=url, results=url)"
            )
            warnings.warn(msg, ConfigurationWarning, stacklevel=3)
        return made_broker, made_results

    def _results_beside(self, broker: str | Broker) -> Results:
        if not isinstance(broker, str) or urlsplit(broker).scheme.lower() not in self.results.factories:
            return self.results.create("memory://")
        try:
            return self.results.create(broker)
        except ConfigurationError as exc:
            scheme = urlsplit(broker).scheme.lower()
            msg = (
                f"Server(broker={broker!r}) without results= keeps results on the same backend, since a results store "
                f"is registered for {scheme}://, but it refused that URL: {exc}. Pass results=... explicitly"
            )
            raise ConfigurationError(msg) from exc

    def middleware(self, server: Server) -> Sequence[Middleware]:
        """Middleware that plugins register for ``server``, in plugin-call order."""
        found: list[Middleware] = []
        self.pm.hook.tasqueue_register_middleware(server=server, register=found.append)
        return found
