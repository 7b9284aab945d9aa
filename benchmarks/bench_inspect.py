"""What the Inspector costs on Redis with 10,000 and 1,000,000 jobs stored.

    python benchmarks/bench_inspect.py                   # starts its own redis-server on a free port
    python benchmarks/bench_inspect.py --sizes 10000     # only the small store
    python benchmarks/bench_inspect.py --url redis://127.0.0.1:6390/0

Each size fills one queue under a fresh key prefix the way workers leave it: 40 % queued,
10 % delayed, 40 % successful and 10 % failed (records in the results store, messages in the
broker, index entries in the control plane), then times, from a client on the same machine,
``Inspector.queue`` (the counts of one queue), ``Inspector.queues`` (every queue, with the
live workers), and pages of 50 jobs of ``Inspector.jobs`` in each state and direction,
including a page 20 pages deep. Times are medians (and 95th percentiles) over ``--repeat``
calls, in milliseconds, round trips included.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench_redis import start_redis
from tasqueue import Inspector, Job, JobOpts, JobState, Server
from tasqueue._codec import encode
from tasqueue._keys import job_key
from tasqueue.broker import Envelope
from tasqueue.control import Finished
from tasqueue.messages import JobMessage, JobStatus
from tasqueue.results import Write
from tasqueue_redis import RedisBroker, RedisResults

QUEUE = "bench"
PAYLOAD = b'{"user": 12345, "template": "welcome", "locale": "en"}'
CHUNK = 1000


async def fill(srv: Server, n: int) -> None:
    """Store ``n`` jobs spread over the states, in chunks (the broker and results APIs, no worker)."""
    broker, results = srv.broker, srv.results
    assert isinstance(broker, RedisBroker)
    control = broker.control
    now = datetime.now(UTC)
    plan = [(JobStatus.QUEUED, 0.4), (JobStatus.QUEUED, 0.1), (JobStatus.SUCCESSFUL, 0.4), (JobStatus.FAILED, 0.1)]
    made = 0
    for part, (status, share) in enumerate(plan):
        count = int(n * share)
        delayed = part == 1
        for start in range(0, count, CHUNK):
            size = min(CHUNK, count - start)
            messages = []
            for i in range(size):
                eta = now + timedelta(hours=1, seconds=made + i) if delayed else None
                job = Job("send_email", PAYLOAD, JobOpts(queue=QUEUE, eta=eta))
                messages.append(
                    JobMessage(
                        id=f"job-{made + i:08d}",
                        queue=QUEUE,
                        status=status,
                        prev_err="ConnectionError: SMTP server closed the connection" if status is JobStatus.FAILED else "",
                        enqueued_at=now,
                        job=job,
                    )
                )
            data = [encode(m) for m in messages]
            await results.set_many([Write(job_key(m.id), d) for m, d in zip(messages, data, strict=True)])
            if status is JobStatus.QUEUED:
                delay = 3600.0 if delayed else 0.0
                await broker.enqueue(QUEUE, [Envelope(m.id, d, delay) for m, d in zip(messages, data, strict=True)])
            else:
                state = JobState.SUCCESSFUL if status is JobStatus.SUCCESSFUL else JobState.FAILED
                at = time.time()
                await control.record([Finished(QUEUE, m.id, state, at + k / 1e6) for k, m in enumerate(messages)])
            made += size
    # A few other queues, as a real deployment has.
    for q in range(9):
        await broker.enqueue(f"other-{q}", [Envelope(f"o{q}-{i}", encode(messages[0]), 0.0) for i in range(10)])


async def timed(call: Callable[[], Awaitable[Any]], repeat: int) -> tuple[float, float]:
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - t0) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.95) - 1]


async def deep_cursor(insp: Inspector, state: JobState, pages: int) -> str | None:
    cursor = None
    for _ in range(pages):
        cursor = (await insp.jobs(QUEUE, state, cursor=cursor, limit=50, newest_first=False)).cursor
    return cursor


async def measure(url: str, n: int, repeat: int, *, flush: bool) -> list[tuple[str, float, float]]:
    prefix = f"bench-inspect-{n}-{int(time.time())}"
    broker = RedisBroker.from_url(url, prefix=prefix)
    results = RedisResults.from_url(url, prefix=prefix, expiry=None, list_limit=None)
    control = broker.control
    control.index_limit = 10 * n  # keep every entry this benchmark writes
    async with Server(broker, results, load_entrypoints=False) as srv:
        t0 = time.perf_counter()
        await fill(srv, n)
        print(f"  filled {n:,} jobs in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
        insp = Inspector(srv)
        counts = (await insp.queue(QUEUE)).counts
        print(f"  counts: {counts}", file=sys.stderr)
        assert counts.queued == int(n * 0.4), counts
        assert counts.failed == int(n * 0.1), counts
        deep = await deep_cursor(insp, JobState.SUCCESSFUL, 20)

        def page(state: JobState, newest_first: bool = True, cursor: str | None = None) -> Callable[[], Awaitable[Any]]:
            return lambda: insp.jobs(QUEUE, state, newest_first=newest_first, cursor=cursor)

        rows = [
            ("counts of one queue (Inspector.queue)", *await timed(lambda: insp.queue(QUEUE), repeat)),
            ("all 10 queues + workers (Inspector.queues)", *await timed(insp.queues, repeat)),
            ("page of 50 queued, newest first", *await timed(page(JobState.QUEUED), repeat)),
            ("page of 50 queued, oldest first", *await timed(page(JobState.QUEUED, False), repeat)),
            ("page of 50 delayed, soonest first", *await timed(page(JobState.DELAYED, False), repeat)),
            ("page of 50 failed, newest first", *await timed(page(JobState.FAILED), repeat)),
            ("page of 50 successful, 20 pages deep", *await timed(page(JobState.SUCCESSFUL, False, deep), repeat)),
        ]
        # The unindexed way, for scale: every pending message of the queue.
        t0 = time.perf_counter()
        pending = await srv.get_pending(QUEUE)
        took = (time.perf_counter() - t0) * 1000
        print(f"  Server.get_pending read {len(pending):,} messages", file=sys.stderr)
        rows.append(("(for scale, no index) Server.get_pending: every waiting job", took, -1.0))
        info = await broker.client.info("memory")
        print(f"  redis used_memory after fill: {info['used_memory_human']}", file=sys.stderr)
        if flush:
            await broker.client.flushdb()  # our own server: make room for the next size
    return rows


async def main_async(args: argparse.Namespace) -> None:
    url = args.url
    proc = None
    if url is None:
        tmp = Path(tempfile.mkdtemp(prefix="bench-inspect-"))
        proc, url = start_redis(tmp, aof=False)
    try:
        table: dict[str, dict[int, tuple[float, float]]] = {}
        for n in args.sizes:
            print(f"{n:,} jobs:", file=sys.stderr)
            for name, p50, p95 in await measure(url, n, args.repeat, flush=proc is not None):
                table.setdefault(name, {})[n] = (p50, p95)
        sizes = args.sizes
        print("\n| call | " + " | ".join(f"{n:,} jobs: p50 / p95 ms" for n in sizes) + " |")
        print("|---|" + "---|" * len(sizes))
        for name, by_size in table.items():
            cells = []
            for n in sizes:
                p50, p95 = by_size[n]
                cells.append(f"{p50:.2f}" if p95 < 0 else f"{p50:.2f} / {p95:.2f}")  # -1: one sample
            print(f"| {name} | " + " | ".join(cells) + " |")
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a Redis to fill under fresh key prefixes (default: start redis-server on a free port)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 1_000_000])
    parser.add_argument("--repeat", type=int, default=200)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
