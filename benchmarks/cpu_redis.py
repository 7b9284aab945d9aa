"""CPU per job of a tasqueue worker and of Redis, with Redis's own count of what each job costs it.

    python benchmarks/cpu_redis.py --jobs 100000            # starts its own redis-server (appendonly)
    python benchmarks/cpu_redis.py --jobs 100000 --no-index # the same without the Inspector's index writes

Enqueues ``--jobs`` no-op jobs with ``enqueue_many``, then starts one worker process
(concurrency 10) and waits until every job is on the success list. Prints the worker's CPU per
job (user + system, start-up included), Redis's CPU per job, and ``INFO commandstats`` per job
(calls and µs of each command, those run inside scripts included). CPU time moves far less than
jobs per second on a shared machine, which makes this the figure to compare two builds with:
install each in its own venv and alternate runs. The script only uses the public API, so the
same file runs against older releases too.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_redis import start_redis
from peers import cpu_seconds, redis_cpu_seconds

QUEUE = "cpu"
PREFIX = "cpu"


def worker_main(url: str, concurrency: int, index: bool) -> None:
    import logging

    from tasqueue import JobCtx, Server, TaskOpts
    from tasqueue_redis import RedisBroker, RedisResults

    if not index:
        # The Inspector's finished-job index is fed by the worker's presence; without a control
        # plane there is nothing to feed. A measuring aid only: no setting turns the index off.
        import tasqueue._presence as presence

        presence.control_of = lambda broker: None  # type: ignore[assignment]
    srv = Server(RedisBroker.from_url(url, prefix=PREFIX), RedisResults.from_url(url, prefix=PREFIX), load_entrypoints=False)

    async def noop(payload: bytes, ctx: JobCtx) -> None:
        return None

    srv.register_task("noop", noop, TaskOpts(queue=QUEUE, concurrency=concurrency))
    logging.basicConfig(level=logging.WARNING)
    srv.run()


def start_worker(url: str, concurrency: int, index: bool) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, __file__, "worker", url, str(concurrency), "1" if index else "0"])


async def measure(url: str, jobs: int, concurrency: int, index: bool, rows: int) -> None:
    import redis.asyncio as redis

    from tasqueue import Job, JobOpts, Server
    from tasqueue_redis import RedisBroker, RedisResults

    raw = redis.Redis.from_url(url)
    worker: subprocess.Popen[bytes] | None = None
    try:
        async with Server(
            RedisBroker.from_url(url, prefix=PREFIX), RedisResults.from_url(url, prefix=PREFIX), load_entrypoints=False
        ) as srv:
            for start in range(0, jobs, 1000):
                await srv.enqueue_many([Job("noop", b"", JobOpts(queue=QUEUE)) for _ in range(min(1000, jobs - start))])
        await raw.config_resetstat()
        before = redis_cpu_seconds(await raw.info("cpu"))
        worker = start_worker(url, concurrency, index)
        started = time.perf_counter()
        success = f"{PREFIX}:success"
        async with asyncio.timeout(max(600, jobs / 100)):
            while await raw.zcard(success) < jobs:  # noqa: ASYNC110 - the worker is another process
                await asyncio.sleep(0.02)
        elapsed = time.perf_counter() - started
        worker_cpu = cpu_seconds([worker.pid])
        redis_cpu = redis_cpu_seconds(await raw.info("cpu")) - before
        stats: dict[str, Any] = await raw.info("commandstats")
    finally:
        if worker is not None:
            worker.kill()
            worker.wait()
        await raw.aclose()
    print(f"{jobs:,} no-op jobs, concurrency {concurrency}{'' if index else ', without the index writes'}")
    print(f"  jobs/s (start-up included)   {jobs / elapsed:10,.0f}")
    print(f"  worker CPU per job           {worker_cpu / jobs * 1e6:10.1f} µs")
    print(f"  Redis CPU per job            {redis_cpu / jobs * 1e6:10.1f} µs")
    print("  Redis commands per job (calls, µs), scripts' own commands included:")
    for name, row in sorted(stats.items(), key=lambda kv: -kv[1]["usec"])[:rows]:
        print(f"    {name.removeprefix('cmdstat_'):24s} {row['calls'] / jobs:7.3f} {row['usec'] / jobs:8.2f}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        worker_main(sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1")
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--no-index", action="store_true", help="leave out the Inspector's finished-job index writes")
    parser.add_argument("--rows", type=int, default=12, help="commands to list")
    args = parser.parse_args()
    directory = tempfile.mkdtemp(prefix="tasqueue-cpu-")
    server, url = start_redis(Path(directory), aof=True)
    try:
        asyncio.run(measure(url, args.jobs, args.concurrency, not args.no_index, args.rows))
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
