"""Page times of tasqueue-dashboard on a Redis queue holding a million jobs.

    python benchmarks/bench_dashboard.py                  # starts its own redis-server on a free port
    python benchmarks/bench_dashboard.py --jobs 100000    # a smaller queue, for a smoke run
    nox -s bench-dashboard

Fills one queue (``big``) with ``--jobs`` queued jobs through ``Server.enqueue_many`` (each job
stored in the results store and published, as a producer does), puts the newest 100,000 of
them in the failed index as well (the index keeps at most that many), then asks every page of
the dashboard ``--repeat`` times, in-process over ASGI with the shared cache off
(``cache_ttl=0``): each request goes to Redis, as the first tab after every cache period does.
Prints the median and the 95th percentile per page; then the time 50 tabs polling the overview
at once take with the cache on (one backend read serves them all).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from tasqueue import Job, JobOpts, Server
from tasqueue.control import Finished, JobState
from tasqueue.inspector import Inspector
from tasqueue_dashboard import create_app
from tasqueue_redis import RedisBroker, RedisResults
from tasqueue_redis.control import INDEX_LIMIT

QUEUE = "big"


def start_redis(directory: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not on PATH; install it, or pass --url")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = [
        binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory), "--save", "",
        "--appendonly", "no", "--maxmemory-policy", "noeviction", "--logfile", str(directory / "redis.log"),
    ]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                sys.exit("redis-server did not start")
            time.sleep(0.02)
    return proc, f"redis://127.0.0.1:{port}/0"


async def fill(srv: Server, insp: Inspector, jobs: int) -> list[str]:
    started = time.perf_counter()
    ids: list[str] = []
    batch = 5000
    tasks = ("send_email", "resize_image", "charge_card")
    for start in range(0, jobs, batch):
        n = min(batch, jobs - start)
        ids += await srv.enqueue_many(
            [
                Job(tasks[(start + k) % 3], b'{"user": %d, "template": "welcome"}' % (start + k), JobOpts(queue=QUEUE))
                for k in range(n)
            ]
        )
        if (start // batch) % 20 == 0:
            print(f"  {start + n:>9,} jobs enqueued ({time.perf_counter() - started:.0f} s)", flush=True)
    now = time.time()
    failed = ids[-INDEX_LIMIT:]
    for start in range(0, len(failed), 10_000):
        part = failed[start : start + 10_000]
        await insp.record(
            [Finished(QUEUE, i, JobState.FAILED, now - (len(failed) - start - k) * 0.01) for k, i in enumerate(part)]
        )
    print(f"filled in {time.perf_counter() - started:.0f} s: {jobs:,} queued, {len(failed):,} in the failed index", flush=True)
    return ids


async def measure(
    client: httpx.AsyncClient, path: str, repeat: int, method: str = "GET", data: str = ""
) -> tuple[float, float, int]:
    times: list[float] = []
    status = 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        if method == "GET":
            answer = await client.get(path)
        else:
            answer = await client.post(path, content=data, headers={"content-type": "application/x-www-form-urlencoded"})
        times.append(time.perf_counter() - t0)
        status = answer.status_code
    times.sort()
    return statistics.median(times) * 1000, times[max(0, int(len(times) * 0.95) - 1)] * 1000, status


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--url", help="an empty Redis to fill (default: start one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proc = None
        url = args.url
        if url is None:
            proc, url = start_redis(Path(tmp))
        try:
            broker = RedisBroker.from_url(url, prefix="bench-dash")
            results = RedisResults.from_url(url, prefix="bench-dash", expiry=None)
            async with Server(broker, results, load_entrypoints=False) as srv:
                insp = Inspector(srv)
                ids = await fill(srv, insp, args.jobs)
                app = create_app(insp, cache_ttl=0)
                async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://bench") as client:
                    page = await client.get("/")
                    token = client.cookies.get("tasqueue_dashboard_csrf")
                    middle = str(len(ids) // 2)  # a queued page's cursor is its position in the list
                    pages = [
                        ("overview", "/"),
                        ("overview, live fragment", "/live/queues"),
                        ("queued, first page (50)", f"/queues/{QUEUE}"),
                        (f"queued, page at position {int(middle):,}", f"/queues/{QUEUE}?cursor={middle}"),
                        ("queued, task filter", f"/queues/{QUEUE}?task=charge_card"),
                        ("failed, first page (50)", f"/queues/{QUEUE}?state=failed"),
                        ("failed, 200 a page", f"/queues/{QUEUE}?state=failed&limit=200"),
                        ("failed, last hour", f"/queues/{QUEUE}?state=failed&since=1h"),
                        ("job page", f"/jobs/{ids[len(ids) // 2]}"),
                        ("find by id", f"/find?id={ids[-1]}"),
                        ("workers", "/workers"),
                        ("schedules", "/schedules"),
                    ]
                    print(f"\n{'page':<40} {'median':>10} {'p95':>10}  status   ({args.repeat} requests each, cache off)")
                    for name, path in pages:
                        median, p95, status = await measure(client, path, args.repeat)
                        print(f"{name:<40} {median:>8.1f} ms {p95:>7.1f} ms  {status}", flush=True)
                    confirm = f"csrf={token}&scope=all&queue={QUEUE}&state=queued&next=/"
                    for name, form in (
                        ("confirm: delete all queued", confirm),
                        ("confirm: delete all queued of a task", confirm + "&task=charge_card"),
                    ):
                        median, p95, status = await measure(client, "/actions/delete", args.repeat, "POST", form)
                        print(f"{name:<40} {median:>8.1f} ms {p95:>7.1f} ms  {status}", flush=True)
                    assert page.status_code == 200
                # 50 tabs polling the overview at once, with the shared cache on (the default 1 s).
                cached = create_app(insp)
                async with httpx.AsyncClient(transport=httpx.ASGITransport(cached), base_url="http://bench") as client:
                    rounds = []
                    for _ in range(args.repeat):
                        t0 = time.perf_counter()
                        answers = await asyncio.gather(*(client.get("/live/queues") for _ in range(50)))
                        rounds.append(time.perf_counter() - t0)
                        assert all(a.status_code == 200 for a in answers)
                        await asyncio.sleep(1.05)  # the next poll finds the cached answer expired
                    print(
                        f"{'overview, 50 tabs at once, cache on':<40} {statistics.median(rounds) * 1000:>8.1f} ms "
                        f"{max(rounds) * 1000:>7.1f} ms  (all 50 answered; one backend read per round)",
                        flush=True,
                    )
                info = await redis_memory(url)
                print(f"\nRedis used_memory: {info}")
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait()


async def redis_memory(url: str) -> str:
    import redis.asyncio as redis

    client = redis.Redis.from_url(url)
    try:
        info = await client.info("memory")
        return str(info.get("used_memory_human"))
    finally:
        await client.aclose()


if __name__ == "__main__":
    asyncio.run(main())
