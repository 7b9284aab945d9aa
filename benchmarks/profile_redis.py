"""Where a tasqueue worker and producer spend their CPU per job on Redis, sampled with py-spy.

    nox -s profile-redis                        # installs py-spy; starts its own redis-server
    python benchmarks/profile_redis.py --jobs 50000 --top 30 --keep /tmp/prof

The worker (one process, concurrency 10, as in bench_redis.py) is attached to while idle, then
``--jobs`` no-op jobs are enqueued in batches and it drains them; the producer is a process
that enqueues ``--one-by-one`` jobs with ``await srv.enqueue``, one at a time. Both are sampled
by py-spy (wall clock, idle samples left out, so a sample is CPU time), and printed as µs per
job: the functions with the most time of their own, and those with the most time beneath them.
``--keep DIR`` keeps the collapsed stacks (feed them to a flame-graph tool).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bench_redis

RATE = 1000  # samples per second


def py_spy() -> str:
    found = shutil.which("py-spy")
    if found is None:
        sys.exit("py-spy is not installed; run `nox -s profile-redis`, or `pip install py-spy`")
    return found


def report(stacks: Path, jobs: int, top: int, title: str) -> None:
    """Own and inclusive time per function, in µs per job, from py-spy's collapsed stacks."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in stacks.read_text().splitlines():
        path, _, count = line.rpartition(" ")
        n = int(count)
        frames = [_short(f) for f in path.split(";")[1:]]  # the first frame is the thread
        if not frames or any("importlib" in f for f in frames):
            continue  # start-up, not per-job work
        total += n
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    per_job = 1e6 / RATE / jobs
    print(f"\n{title}: {total / RATE:.2f} s of CPU in {total} samples, {total * per_job:.1f} µs per job")
    for name, counter in (("own time", own), ("inclusive time", inclusive)):
        print(f"  top {top} by {name} (µs per job, share of all samples)")
        for frame, n in counter.most_common(top):
            print(f"    {n * per_job:8.1f} µs  {n / total:6.1%}  {frame}")


def _short(frame: str) -> str:
    """``func (path/to/module.py:123)`` -> ``func (module.py)``: one entry per function, not per line."""
    m = re.match(r"(.*) \((.*?):\d+\)$", frame)
    if not m:
        return frame
    func, path = m.groups()
    parts = Path(path).parts
    where = "/".join(parts[-2:]) if "site-packages" in parts or "src" in parts else parts[-1]
    return f"{func} ({where})"


async def profile_worker(url: str, jobs: int, out: Path, logdir: Path) -> None:
    b = bench_redis.Bench(url, logdir)
    prefix = await b.fresh()
    worker = bench_redis.WorkerProcess(url, prefix, 10, logdir)
    try:
        await worker.ready()
        spy = subprocess.Popen(  # noqa: ASYNC220 - started once, while the worker idles
            [
                py_spy(),
                "record",
                "--pid",
                str(worker.proc.pid),
                "--rate",
                str(RATE),
                "--nonblocking",
                "--format",
                "raw",
                "-o",
                str(out),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        await asyncio.sleep(1)  # attached
        await b.enqueue_bulk(jobs, prefix)
        span = await b._success_span(prefix, jobs)
        print(f"worker: {jobs:,} jobs in {span:.2f} s ({(jobs - 1) / span:,.0f} jobs/s while sampled)")
        spy.send_signal(signal.SIGINT)
        spy.wait(60)
    finally:
        worker.stop()
        await b.raw.aclose()


def producer_main(url: str, prefix: str, n: int) -> None:
    from tasqueue import Job, JobOpts

    async def go() -> None:
        b = bench_redis.Bench(url, Path(tempfile.gettempdir()))
        async with b.server(prefix) as srv:  # type: ignore[attr-defined]
            jobs = [Job("noop", b"", JobOpts(queue=bench_redis.QUEUE)) for _ in range(n)]
            start = time.perf_counter()
            for job in jobs:
                await srv.enqueue(job)
            print(f"producer: {n:,} one-by-one enqueues at {n / (time.perf_counter() - start):,.0f} jobs/s while sampled")
        await b.raw.aclose()

    asyncio.run(go())


def profile_producer(url: str, n: int, out: Path) -> None:
    args = [sys.executable, __file__, "producer", "--url", url, "--prefix", "prof", "--n", str(n)]
    subprocess.run(
        [py_spy(), "record", "--rate", str(RATE), "--nonblocking", "--format", "raw", "-o", str(out), "--", *args],
        check=True,
        stderr=subprocess.DEVNULL,
    )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "producer":
        parser = argparse.ArgumentParser()
        parser.add_argument("producer")
        parser.add_argument("--url", required=True)
        parser.add_argument("--prefix", required=True)
        parser.add_argument("--n", type=int, required=True)
        ns = parser.parse_args()
        producer_main(ns.url, ns.prefix, ns.n)
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a Redis to use (it is FLUSHALLed!); default: start one on a free port")
    parser.add_argument("--jobs", type=int, default=50_000, help="no-op jobs the worker drains")
    parser.add_argument("--one-by-one", type=int, default=20_000, help="jobs the producer enqueues one at a time")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--keep", type=Path, help="a directory to keep the collapsed stacks in")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="profile-redis-") as tmp:
        logdir = Path(tmp)
        keep = args.keep or logdir
        keep.mkdir(parents=True, exist_ok=True)
        proc, url = (None, args.url) if args.url else bench_redis.start_redis(logdir, aof=True)
        try:
            asyncio.run(profile_worker(url, args.jobs, keep / "worker.txt", logdir))
            report(keep / "worker.txt", args.jobs, args.top, "worker")
            profile_producer(url, args.one_by_one, keep / "producer.txt")
            report(keep / "producer.txt", args.one_by_one, args.top, "producer (one-by-one enqueue)")
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(10)
            os.environ.pop("BENCH_REDIS_URL", None)


if __name__ == "__main__":
    main()
