"""Hook specifications: how a plugin tells tasqueue what it provides.

Plugins are modules (or objects) with functions marked ``@tasqueue.hookimpl`` and named after
these specs, found through the ``tasqueue`` entry-point group::

    [project.entry-points.tasqueue]
    redis = "tasqueue_redis.plugin"

Every hook runs at configuration time only (when a Server is built or a URL first resolved),
never per job, and takes a ``register`` callback, so that new arguments can be added without
breaking old plugins: pluggy passes an implementation only the arguments it names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from tasqueue.broker import Broker
    from tasqueue.middleware import Middleware
    from tasqueue.results import Results
    from tasqueue.server import Server

__all__ = [
    "BrokerFactory",
    "RegisterBroker",
    "RegisterMiddleware",
    "RegisterResults",
    "ResultsFactory",
    "hookimpl",
    "hookspec",
    "tasqueue_register_brokers",
    "tasqueue_register_middleware",
    "tasqueue_register_results",
]

PROJECT = "tasqueue"
hookspec = pluggy.HookspecMarker(PROJECT)
#: The marker plugin authors put on their hook implementations.
hookimpl = pluggy.HookimplMarker(PROJECT)

#: ``factory(url, **options)`` builds a broker for a URL of the scheme it was registered for.
BrokerFactory = Callable[..., "Broker"]
#: ``factory(url, **options)`` builds a results store.
ResultsFactory = Callable[..., "Results"]
RegisterBroker = Callable[[str, BrokerFactory], None]
RegisterResults = Callable[[str, ResultsFactory], None]
RegisterMiddleware = Callable[["Middleware"], None]


@hookspec
def tasqueue_register_brokers(register: RegisterBroker) -> None:
    """Register broker factories by URL scheme: ``register("redis", factory)``.

    Called once per Server, when it resolves its broker URL. ``factory(url, **options)`` returns
    a ``tasqueue.broker.Broker``. Two plugins registering one scheme is an error.
    """


@hookspec
def tasqueue_register_results(register: RegisterResults) -> None:
    """Register results-store factories by URL scheme: ``register("redis", factory)``.

    Same contract as ``tasqueue_register_brokers``, for ``tasqueue.results.Results``.
    """


@hookspec
def tasqueue_register_middleware(server: Server, register: RegisterMiddleware) -> None:
    """Add middleware to a Server while it is built: ``register(MyMiddleware())``.

    Called once per Server. Middleware wraps every enqueue and every run of a job (see
    ``tasqueue.middleware.Middleware``); this hook is where a plugin such as tasqueue-otel
    installs it.
    """
