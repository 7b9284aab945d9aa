"""huey as a new user runs it, for bench_redis.py: RedisHuey on the benchmark's Redis.

The worker is huey's own consumer, ``huey_consumer peer_huey.huey -w 10 -k thread``, with its
defaults otherwise (it logs two INFO lines per task; results of ``None`` are not stored).
``BENCH_REDIS_URL`` names the Redis, ``BENCH_EXPECT`` how many completions end a timed run.
"""

from __future__ import annotations

import os
import time

from huey import RedisHuey, signals

from peer_span import Span

huey = RedisHuey("bench", url=os.environ["BENCH_REDIS_URL"])
span = Span(int(os.environ.get("BENCH_EXPECT", "0")))


@huey.task()
def noop(*args: object) -> None:
    return None


@huey.task()
def stamp(sample: int) -> None:
    started = time.time()
    huey.storage.conn.rpush("peer:stamps", f"{sample} {started!r}")


@huey.signal(signals.SIGNAL_COMPLETE)
def _completed(signal: str, task: object) -> None:
    span.completed(huey.storage.conn)


def chain(size: int) -> object:
    """A huey pipeline of ``size`` no-op tasks, each enqueued when the one before it finished."""
    pipe = noop.s()
    for _ in range(size - 1):
        pipe = pipe.then(noop)
    return pipe
