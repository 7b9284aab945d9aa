"""dramatiq as a new user runs it, for bench_redis.py: its RedisBroker on the benchmark's Redis.

The worker is dramatiq's own CLI, ``dramatiq peer_dramatiq --processes 1 --threads 10``, with
its default middleware (no results backend). ``BENCH_REDIS_URL`` names the Redis,
``BENCH_EXPECT`` how many completions end a timed run.
"""

from __future__ import annotations

import os
import time

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from peer_span import Span

broker = RedisBroker(url=os.environ["BENCH_REDIS_URL"])
dramatiq.set_broker(broker)
span = Span(int(os.environ.get("BENCH_EXPECT", "0")))


class _Completions(dramatiq.Middleware):
    def after_process_message(
        self, broker: dramatiq.Broker, message: object, *, result: object = None, exception: object = None
    ) -> None:
        span.completed(broker.client)  # type: ignore[attr-defined]


broker.add_middleware(_Completions())


@dramatiq.actor(queue_name="bench")
def noop(*args: object) -> None:
    return None


@dramatiq.actor(queue_name="bench")
def stamp(sample: int) -> None:
    started = time.time()
    broker.client.rpush("peer:stamps", f"{sample} {started!r}")


def chain(size: int) -> dramatiq.pipeline:
    """A dramatiq pipeline of ``size`` no-op messages (results not piped on)."""
    return dramatiq.pipeline([noop.message_with_options(pipe_ignore=True) for _ in range(size)])


def group(size: int) -> dramatiq.group:
    return dramatiq.group([noop.message() for _ in range(size)])
