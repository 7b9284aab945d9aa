"""What the NATS control plane costs with 100 and 10,000 jobs queued in one queue.

    python benchmarks/bench_inspect_nats.py                      # starts its own nats-server (PATH)
    python benchmarks/bench_inspect_nats.py --server /usr/sbin/nats-server --sizes 100 10000

Times, in milliseconds from a client on the same machine: the counts of the queue, the newest
page of 50 queued jobs, and ``held`` of one id (the lookup by id behind delete, run now and the
retry of failed jobs, which reads the queue's messages: a WorkQueue stream has no index by id).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from bench_nats import start_nats
from tasqueue.broker import Envelope
from tasqueue.control import JobState
from tasqueue_nats import NatsBroker


async def measure(url: str, sizes: list[int]) -> None:
    broker = NatsBroker(url, prefix="bench")
    try:
        for n in sizes:
            queue = f"q{n}"
            for start in range(0, n, 1000):
                await broker.enqueue(queue, [Envelope(f"{queue}-{i}", b"x" * 100) for i in range(start, min(n, start + 1000))])
            control = broker.control
            t = time.perf_counter()
            (counts,) = await control.counts([queue])
            counted = time.perf_counter() - t
            t = time.perf_counter()
            await control.page(queue, JobState.QUEUED, cursor=None, limit=50, newest_first=True)
            paged = time.perf_counter() - t
            t = time.perf_counter()
            found = await control.held(queue, [f"{queue}-{n - 1}"])
            looked = time.perf_counter() - t
            if counts.queued != n or not found:
                raise SystemExit(f"wrong answers: {counts.queued} queued, held {found}")
            print(
                f"{n:>7} queued: counts {counted * 1e3:.1f} ms, newest page of 50 {paged * 1e3:.1f} ms, "
                f"held(one id) {looked * 1e3:.0f} ms"
            )
    finally:
        await broker.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", help="the nats-server binary (default: the one on PATH)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 10_000])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        proc, url = start_nats(Path(directory), args.server)
        try:
            asyncio.run(measure(url, args.sizes))
        finally:
            proc.terminate()
            proc.wait(30)


if __name__ == "__main__":
    main()
