"""Throughput and memory of the job engine itself, on the embedded memory:// backend.

    python benchmarks/bench_memory.py [--jobs 100000] [--concurrency 10] [--footprint] [--payload none|bytes|typed]

Enqueues N no-op jobs one by one (``await srv.enqueue``), starts the worker and times until
every job has run and its outcome is stored, then times a bulk enqueue (``enqueue_many``) on a
second server, all in one process. Prints jobs/s for each phase and the peak RSS of the run.
With no broker or network in the way, this is the ceiling every backend's figures are
bounded by.

``--footprint`` measures what N jobs leave behind instead: it feeds them to a running worker
in batches of 1,000 (so the queue never holds many), then prints the RSS the process keeps
afterwards with the store at its defaults (24 h expiry, the count caps) and how many keys and
list entries the store holds.

``--payload`` measures what the typed layer costs. ``bytes``: a bytes handler gets a two-field
msgpack payload and returns it as its result. ``typed``: the same payload as a
``msgspec.Struct``, enqueued through the task handle (validated), decoded for a typed handler
whose ``int`` result is encoded and stored. Run both, one process each, and compare; CPU time
per job is the steadier figure on a shared machine. ``--typed-overhead`` times just the pieces
the typed layer adds, outside the engine (best of several rounds, so load on the machine
hardly moves it): building a job through the handle against ``Job(name, bytes)``, and a run of
the typed handler's wrapper against the bytes handler it replaces.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import resource
import time
import timeit
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgspec

from tasqueue import Job, JobCtx, JobStatus, Server
from tasqueue.memory import DEFAULT_LIST_LIMIT


class Args(msgspec.Struct):
    a: int
    b: int


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def footprint(jobs: int, concurrency: int) -> None:
    srv = Server(load_entrypoints=False)

    @srv.task("noop", concurrency=concurrency)
    async def noop(payload: bytes, ctx: JobCtx) -> None:
        return None

    gc.collect()
    before = rss_mb()
    worker = asyncio.create_task(srv.start(handle_signals=False))
    start = time.perf_counter()
    for offset in range(0, jobs, 1000):
        ids = await srv.enqueue_many([Job("noop", b"") for _ in range(min(1000, jobs - offset))])
        await srv.wait(ids[-1], poll=0.001)
    took = time.perf_counter() - start
    await srv.stop()
    await worker
    gc.collect()
    after = rss_mb()
    store = srv.results
    keys = len(getattr(store, "_data", ())) + len(getattr(store, "_kept", ()))
    rate = jobs / took
    print(f"memory:// {jobs:,} no-op jobs in batches of 1,000, concurrency {concurrency}, one process ({rate:,.0f} jobs/s)")
    print(f"  RSS before / after : {before:.0f} MB / {after:.0f} MB (+{after - before:.0f} MB)")
    print(f"  left in the store  : {keys:,} keys, {len(await srv.get_success()):,} ids on the success list")


async def main(jobs: int, concurrency: int, payload: str = "none") -> None:
    baseline = peak_rss_mb()
    srv = Server(load_entrypoints=False)
    left = jobs
    finished = asyncio.Event()

    def done() -> None:
        nonlocal left
        left -= 1
        if left == 0:
            finished.set()

    enqueue: Callable[[], Awaitable[str]]
    make: Callable[[], Job]
    if payload == "typed":

        @srv.task("work", concurrency=concurrency)
        async def typed(args: Args) -> int:
            done()
            return args.a + args.b

        enqueue, make = (lambda: typed.enqueue(Args(a=1, b=2))), (lambda: typed.job(Args(a=1, b=2)))
    else:
        data = msgspec.msgpack.encode(Args(a=1, b=2)) if payload == "bytes" else b""

        @srv.task("work", concurrency=concurrency)
        async def raw(payload: bytes, ctx: JobCtx) -> bytes | None:
            done()
            return payload or None

        enqueue, make = (lambda: srv.enqueue(Job("work", data))), (lambda: Job("work", data))

    start, cpu = time.perf_counter(), time.process_time()
    ids = [await enqueue() for _ in range(jobs)]
    one_by_one, one_by_one_cpu = time.perf_counter() - start, time.process_time() - cpu

    worker = asyncio.create_task(srv.start(handle_signals=False))
    start, cpu = time.perf_counter(), time.process_time()
    await finished.wait()
    # Every outcome written, not just every handler returned.
    assert (await srv.wait(ids[-1], poll=0.001)).status is JobStatus.SUCCESSFUL
    processing, processing_cpu = time.perf_counter() - start, time.process_time() - cpu
    await srv.stop()
    await worker
    assert len(await srv.get_success()) == min(jobs, DEFAULT_LIST_LIMIT)
    run_rss = peak_rss_mb()  # before the bulk phase adds a second server's worth of records

    # The bulk phase on fresh backends (the same Server, so that typed jobs are built alike).
    srv.broker, srv.results = type(srv.broker)(), type(srv.results)()
    start, cpu = time.perf_counter(), time.process_time()
    for offset in range(0, jobs, 1000):
        await srv.enqueue_many([make() for _ in range(min(1000, jobs - offset))])
    bulk, bulk_cpu = time.perf_counter() - start, time.process_time() - cpu

    kind = {"none": "no-op jobs", "bytes": "jobs with a bytes payload and result", "typed": "typed jobs (Struct in, int out)"}
    print(f"memory:// {jobs:,} {kind[payload]}, concurrency {concurrency}, one process")
    print(f"  enqueue one by one : {jobs / one_by_one:10,.0f} jobs/s  {one_by_one_cpu / jobs * 1e6:6.1f} µs CPU/job")
    print(f"  enqueue_many (1000): {jobs / bulk:10,.0f} jobs/s  {bulk_cpu / jobs * 1e6:6.1f} µs CPU/job")
    print(f"  processing         : {jobs / processing:10,.0f} jobs/s  {processing_cpu / jobs * 1e6:6.1f} µs CPU/job")
    print(f"  peak RSS           : {run_rss:10,.0f} MB (before the run: {baseline:.0f} MB)")


def typed_overhead(rounds: int = 7, number: int = 100_000) -> None:
    srv = Server(load_entrypoints=False)

    @srv.task("work")
    async def typed(args: Args) -> int:
        return args.a + args.b

    async def raw(payload: bytes, ctx: JobCtx) -> bytes:
        return payload

    data = msgspec.msgpack.encode(Args(a=1, b=2))
    wrapper = srv.tasks["work"].handler
    ctx: JobCtx = None  # type: ignore[assignment]  # neither handler looks at it

    def run(handler: Callable[[bytes, JobCtx], Awaitable[object]]) -> None:
        with contextlib.suppress(StopIteration):
            handler(data, ctx).send(None)  # type: ignore[attr-defined]  # neither awaits: it returns at once

    def best(stmt: Callable[[], object]) -> float:
        return min(timeit.repeat(stmt, number=number, repeat=rounds)) / number * 1e6

    job_bytes, job_typed = best(lambda: Job("work", data)), best(lambda: typed.job(Args(a=1, b=2)))
    run_bytes, run_typed = best(lambda: run(raw)), best(lambda: run(wrapper))
    print(f"typed layer, best of {rounds} x {number:,} (µs per job)")
    print(
        f"  build a job  : Job(name, bytes) {job_bytes:5.2f}  handle.job(Struct) {job_typed:5.2f}  (+{job_typed - job_bytes:.2f})"
    )
    print(
        f"  call handler : bytes handler    {run_bytes:5.2f}  typed wrapper      {run_typed:5.2f}  (+{run_typed - run_bytes:.2f})"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--footprint", action="store_true", help="measure what the jobs leave behind")
    parser.add_argument("--payload", choices=("none", "bytes", "typed"), default="none", help="what the jobs carry")
    parser.add_argument("--typed-overhead", action="store_true", help="time only what the typed layer adds")
    args = parser.parse_args()
    if args.typed_overhead:
        typed_overhead()
    elif args.footprint:
        asyncio.run(footprint(args.jobs, args.concurrency))
    else:
        asyncio.run(main(args.jobs, args.concurrency, args.payload))
