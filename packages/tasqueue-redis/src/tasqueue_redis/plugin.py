"""The tasqueue plugin: registers the ``redis://``, ``rediss://`` and ``unix://`` schemes.

Loaded through the ``tasqueue`` entry-point group. It imports nothing heavy: redis-py is
imported only when a URL of these schemes is first resolved.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tasqueue.hookspecs import RegisterBroker, RegisterResults, hookimpl

if TYPE_CHECKING:
    from tasqueue_redis.broker import RedisBroker
    from tasqueue_redis.results import RedisResults

SCHEMES = ("redis", "rediss", "unix")


def broker_from_url(url: str, **options: Any) -> RedisBroker:
    """``factory(url, **options)`` for the broker schemes: ``RedisBroker.from_url``."""
    from tasqueue_redis.broker import RedisBroker

    return RedisBroker.from_url(url, **options)


def results_from_url(url: str, **options: Any) -> RedisResults:
    """``factory(url, **options)`` for the results schemes: ``RedisResults.from_url``."""
    from tasqueue_redis.results import RedisResults

    return RedisResults.from_url(url, **options)


@hookimpl
def tasqueue_register_brokers(register: RegisterBroker) -> None:
    for scheme in SCHEMES:
        register(scheme, broker_from_url)


@hookimpl
def tasqueue_register_results(register: RegisterResults) -> None:
    for scheme in SCHEMES:
        register(scheme, results_from_url)
