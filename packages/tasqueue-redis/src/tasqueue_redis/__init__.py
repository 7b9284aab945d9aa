"""tasqueue-redis: a Redis broker and results store for tasqueue.

    from tasqueue import Server

    srv = Server(broker="redis://127.0.0.1:6379/0", results="redis://127.0.0.1:6379/0")

or, with clients of your own::

    import redis.asyncio as redis
    from tasqueue_redis import RedisBroker, RedisResults

    client = redis.Redis(host="127.0.0.1")
    srv = Server(broker=RedisBroker(client, visibility_timeout=30), results=RedisResults(client))

Names are imported lazily, so that loading the plugin (``tasqueue_redis.plugin``) does not
import redis-py before a Redis URL is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tasqueue_redis.broker import QueueStats, RedisBroker
    from tasqueue_redis.results import RedisResults

__all__ = ["QueueStats", "RedisBroker", "RedisResults", "__version__"]


def __getattr__(name: str) -> Any:
    if name in {"RedisBroker", "QueueStats"}:
        from tasqueue_redis import broker

        return getattr(broker, name)
    if name == "RedisResults":
        from tasqueue_redis.results import RedisResults

        return RedisResults
    if name == "__version__":
        from importlib.metadata import version

        return version("tasqueue-redis")
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
