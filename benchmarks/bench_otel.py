"""What tasqueue-otel costs: no-op jobs on memory://, without the plugin, with no-op providers, with the SDK.

    python benchmarks/bench_otel.py                 # 20000 jobs, 7 rounds
    python benchmarks/bench_otel.py -n 50000 -r 11

Three Servers run the same work, interleaved round by round so that machine noise spreads
evenly, and the best round of each is reported:

- ``none``: no plugin (``load_entrypoints=False``), the floor;
- ``noop``: ``OtelPlugin`` with the API's no-op tracer and meter providers passed explicitly;
- ``global``: ``OtelPlugin()`` on the global providers while no SDK is configured (the API's
  proxies): what ``pip install tasqueue-otel`` costs an app that exports nothing;
- ``sdk``: the SDK's ``TracerProvider`` (``SimpleSpanProcessor`` into an ``InMemorySpanExporter``,
  always sampling) and ``MeterProvider`` (``InMemoryMetricReader``): every span and point recorded.

Each round times two phases: enqueueing N jobs one ``await srv.enqueue`` at a time, and a worker
(concurrency 64) running all of them, on the wall clock and in CPU time (steadier on a shared
machine). Overhead is relative to ``none``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import time
from collections.abc import Callable
from typing import Any

from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.trace import NoOpTracerProvider

from tasqueue import Job, JobCtx, Server
from tasqueue_otel import OtelPlugin


def no_plugin() -> list[Any]:
    return []


def noop_providers() -> list[Any]:
    return [OtelPlugin(tracer_provider=NoOpTracerProvider(), meter_provider=NoOpMeterProvider())]


def unconfigured() -> list[Any]:
    # What the installed entry point does in an app that never configured OpenTelemetry: the
    # global providers are the API's proxies, which stay no-op until an SDK is set.
    return [OtelPlugin()]


def sdk_providers() -> list[Any]:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    return [OtelPlugin(tracer_provider=tracer_provider, meter_provider=meter_provider)]


VARIANTS: dict[str, Callable[[], list[Any]]] = {
    "none": no_plugin,
    "noop": noop_providers,
    "global": unconfigured,
    "sdk": sdk_providers,
}


class Round:
    """One round's timings: wall-clock and CPU seconds of each phase."""

    def __init__(self) -> None:
        self.wall = [0.0, 0.0]
        self.cpu = [0.0, 0.0]


async def one_round(plugins: list[Any], n: int, concurrency: int) -> Round:
    """Enqueue ``n`` jobs (phase 0), then let a worker run them all (phase 1)."""
    srv = Server(plugins=plugins, load_entrypoints=False)
    done = asyncio.Event()
    ran = 0

    @srv.task("noop", concurrency=concurrency)
    async def noop(payload: bytes, ctx: JobCtx) -> None:
        nonlocal ran
        ran += 1
        if ran == n:
            done.set()

    r = Round()
    gc.collect()  # every round starts from the same heap, not the garbage of the one before
    async with srv:
        job = Job("noop", b"")
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(n):
            await srv.enqueue(job)
        r.wall[0], r.cpu[0] = time.perf_counter() - wall, time.process_time() - cpu
        wall, cpu = time.perf_counter(), time.process_time()
        worker = asyncio.create_task(srv.start(handle_signals=False))
        await done.wait()
        r.wall[1], r.cpu[1] = time.perf_counter() - wall, time.process_time() - cpu
        await srv.stop()
        await worker
    return r


def best(rounds: list[Round], clock: str, phase: int | None) -> float:
    """The fastest round's seconds for one phase (or both, ``None``) on one clock.

    The minimum, as ``timeit`` reports: on a shared machine the other rounds measure the
    neighbours as much as the code.
    """
    return min(sum(getattr(r, clock)) if phase is None else getattr(r, clock)[phase] for r in rounds)


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("-n", "--jobs", type=int, default=20_000)
    parser.add_argument("-r", "--rounds", type=int, default=7)
    parser.add_argument("-c", "--concurrency", type=int, default=64)
    args = parser.parse_args()
    n = args.jobs
    if importlib.util.find_spec("opentelemetry.sdk") is None:
        print("opentelemetry-sdk is not installed (pip install tasqueue-otel[sdk]): skipping the 'sdk' variant")
        del VARIANTS["sdk"]

    await one_round([], 1000, args.concurrency)  # warm up imports and the allocator
    rounds: dict[str, list[Round]] = {name: [] for name in VARIANTS}
    for _ in range(args.rounds):
        for name, plugins in VARIANTS.items():
            rounds[name].append(await one_round(plugins(), n, args.concurrency))

    print(f"{n} no-op jobs on memory://, worker concurrency {args.concurrency}, best of {args.rounds} rounds")
    print(f"{'variant':<8}{'enqueue/s':>11}{'run/s':>9}{'end-to-end/s':>14}{'overhead (wall)':>17}{'overhead (cpu)':>16}")
    base = rounds["none"]
    for name, rs in rounds.items():
        wall = (1 / best(rs, "wall", 0), 1 / best(rs, "wall", 1), 1 / best(rs, "wall", None))
        over_wall = best(rs, "wall", None) / best(base, "wall", None) - 1
        over_cpu = best(rs, "cpu", None) / best(base, "cpu", None) - 1
        print(f"{name:<8}{n * wall[0]:>11,.0f}{n * wall[1]:>9,.0f}{n * wall[2]:>14,.0f}{over_wall:>16.1%}{over_cpu:>16.1%}")
    print("overhead: extra time per job (enqueue + run) relative to 'none'; per job, in CPU microseconds:")
    for name, rs in rounds.items():
        if name != "none":
            enq = (best(rs, "cpu", 0) - best(base, "cpu", 0)) / n * 1e6
            run = (best(rs, "cpu", 1) - best(base, "cpu", 1)) / n * 1e6
            print(f"  {name:<7} {enq:+6.1f} us per enqueue, {run:+6.1f} us per run")


if __name__ == "__main__":
    asyncio.run(main())
