"""tasqueue-nats: a NATS JetStream broker and results store for tasqueue.

    from tasqueue import Server

    srv = Server(broker="nats://127.0.0.1:4222", results="nats://127.0.0.1:4222")

or with options as arguments::

    from tasqueue_nats import NatsBroker, NatsResults

    srv = Server(broker=NatsBroker("nats://127.0.0.1:4222", visibility_timeout=30, replicas=3),
                 results=NatsResults("nats://127.0.0.1:4222", expiry=3600))

Names are imported lazily, so that loading the plugin (``tasqueue_nats.plugin``) does not
import nats-py before a NATS URL is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tasqueue_nats.broker import NatsBroker
    from tasqueue_nats.results import NatsResults

__all__ = ["NatsBroker", "NatsResults", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "NatsBroker":
        from tasqueue_nats.broker import NatsBroker

        return NatsBroker
    if name == "NatsResults":
        from tasqueue_nats.results import NatsResults

        return NatsResults
    if name == "__version__":
        from importlib.metadata import version

        return version("tasqueue-nats")
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
