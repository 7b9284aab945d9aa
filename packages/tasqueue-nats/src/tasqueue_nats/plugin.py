"""The tasqueue plugin: registers the ``nats://`` and ``tls://`` schemes.

Loaded through the ``tasqueue`` entry-point group. It imports nothing heavy: nats-py is
imported only when a URL of these schemes is first resolved.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tasqueue.hookspecs import RegisterBroker, RegisterResults, hookimpl

if TYPE_CHECKING:
    from tasqueue_nats.broker import NatsBroker
    from tasqueue_nats.results import NatsResults

SCHEMES = ("nats", "tls")


def broker_from_url(url: str, **options: Any) -> NatsBroker:
    """``factory(url, **options)`` for the broker schemes: ``NatsBroker.from_url``."""
    from tasqueue_nats.broker import NatsBroker

    return NatsBroker.from_url(url, **options)


def results_from_url(url: str, **options: Any) -> NatsResults:
    """``factory(url, **options)`` for the results schemes: ``NatsResults.from_url``."""
    from tasqueue_nats.results import NatsResults

    return NatsResults.from_url(url, **options)


@hookimpl
def tasqueue_register_brokers(register: RegisterBroker) -> None:
    for scheme in SCHEMES:
        register(scheme, broker_from_url)


@hookimpl
def tasqueue_register_results(register: RegisterResults) -> None:
    for scheme in SCHEMES:
        register(scheme, results_from_url)
