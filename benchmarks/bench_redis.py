"""tasqueue on Redis against its peers (huey, dramatiq) and the floor: bare redis-py on the same Redis.

    python benchmarks/bench_redis.py                 # starts its own redis-server on a free port
    python benchmarks/bench_redis.py --url redis://127.0.0.1:6380/0
    python benchmarks/bench_redis.py --quick         # smaller sizes, for a smoke run
    python benchmarks/bench_redis.py --peers ''      # tasqueue and the floors only
    python benchmarks/bench_redis.py --repeat 3      # medians and ranges of three rounds

Figures, all on one Redis in one run, printed as they come and then as one table with the
issue's targets (processing vs the faster peer, one-by-one enqueue vs huey, idle p50 vs the
floor, workflows vs dramatiq). Each peer (``peers.py``; the apps in ``peer_huey.py`` and
``peer_dramatiq.py``) runs the same shapes as a new user runs it: its own worker CLI, one
process at the same concurrency in threads (huey ``-w 10 -k thread``, dramatiq ``--processes 1
--threads 10``), its producer API one call per job, its defaults otherwise. They are
bench-only dependencies, installed by ``nox -s bench-redis``; a peer that is not installed is
left out with a note.

* enqueue: ``await srv.enqueue`` one by one (and each peer's call), and ``srv.enqueue_many`` in batches of 1000, against
  a bare awaited ``LPUSH`` per job and pipelined ``LPUSH``;
* processing: 20,000 and 100,000 no-op jobs through one worker *process* at concurrency 10
  (pre-enqueued; timed from the first to the last job recorded successful, by the Redis clock),
  against the floor consumer: a Lua script that moves up to 100 ids from a list into a ZSET of
  leases per call, and pipelined ZREM acks, with no status or result writes;
* 10,000 chains of 10 jobs and 10,000 groups of 10 jobs (``--chains``/``--groups`` to scale;
  peers: huey pipelines, dramatiq pipelines and groups);
* idle latency: enqueue-to-handler-start, p50/p99, with the worker waiting on an empty queue,
  next to two floors (redis-py ``LPUSH`` -> ``BLPOP``, and the same over raw blocking sockets)
  and the Redis time of each script right after a wake-up (``SLOWLOG``); ``--latency-only``
  runs just this part;
* worker peak RSS (VmHWM of the process that runs the jobs, after the 100,000-job run);
* CPU time per job in the 100,000-job run, of the worker's processes (start-up included) and of
  Redis: on a shared host it moves far less than jobs per second do.

The started Redis uses ``appendonly yes`` with ``appendfsync everysec``, as a deployment that must
not lose jobs would (``--no-aof`` turns that off).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import peers as peer_libs

QUEUE = "bench"
HERE = Path(__file__).resolve()


# ---- the worker process -----------------------------------------------------------------------


def worker_main(url: str, prefix: str, concurrency: int) -> None:
    import logging

    from tasqueue import JobCtx, Server, TaskOpts
    from tasqueue_redis import RedisBroker, RedisResults

    srv = Server(
        RedisBroker.from_url(url, prefix=prefix),
        RedisResults.from_url(url, prefix=prefix),
        load_entrypoints=False,
    )

    async def noop(payload: bytes, ctx: JobCtx) -> None:
        return None

    async def stamp(payload: bytes, ctx: JobCtx) -> bytes:
        return repr(time.time()).encode()

    srv.register_task("noop", noop, TaskOpts(queue=QUEUE, concurrency=concurrency))
    srv.register_task("stamp", stamp, TaskOpts(queue=QUEUE))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    loop = os.environ.get("BENCH_LOOP", "auto")  # set by --loop
    srv.run(loop=loop)  # type: ignore[arg-type]


def floor_consumer_main(url: str, key: str, out: str) -> None:
    """The idle-latency floor: a bare BLPOP loop that stamps when each item arrived."""
    import redis.asyncio as redis

    async def consume() -> None:
        client = redis.Redis.from_url(url)
        await client.rpush(out, b"ready")
        while True:
            item = await client.blpop([key], timeout=1)
            if item is None:
                continue
            if item[1] == b"stop":
                break
            await client.rpush(out, item[1] + b" " + repr(time.time()).encode())
        await client.aclose()

    asyncio.run(consume())


class WorkerProcess:
    """``bench_redis.py worker ...`` in a subprocess; ready once it logged "worker started"."""

    def __init__(self, url: str, prefix: str, concurrency: int, logdir: Path, mode: str = "worker") -> None:
        self.log = logdir / f"{mode}-{prefix}.log"
        args = [sys.executable, str(HERE), mode, "--url", url, "--prefix", prefix, "--concurrency", str(concurrency)]
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
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# ---- the Redis server -------------------------------------------------------------------------


def start_redis(directory: Path, aof: bool) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not on PATH; install it, or pass --url")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = [
        binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory), "--save", "",
        "--appendonly", "yes" if aof else "no", "--appendfsync", "everysec",
        "--maxmemory-policy", "noeviction", "--logfile", str(directory / "redis.log"),
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


# ---- measurements -----------------------------------------------------------------------------

FLOOR_CLAIM = """
local ids = redis.call('RPOP', KEYS[1], ARGV[1])
if not ids then return {} end
local z = {}
for _, id in ipairs(ids) do z[#z + 1] = ARGV[2]; z[#z + 1] = id end
redis.call('ZADD', KEYS[2], unpack(z))
return ids
"""


class Bench:
    def __init__(self, url: str, logdir: Path) -> None:
        import redis.asyncio as redis

        self.url = url
        self.logdir = logdir
        self.raw = redis.Redis.from_url(url)
        self.rows: list[tuple[str, str, str]] = []
        self.floor: dict[str, float] = {}
        self.script_us: dict[str, float] = {}

    def row(self, name: str, value: str, ratio: str = "") -> None:
        self.rows.append((name, value, ratio))
        print(f"  {name:<58} {value:>18} {ratio}", flush=True)

    async def fresh(self) -> str:
        await self.raw.flushall()
        return f"b{uuid.uuid4().hex[:8]}"

    # -- floor --

    async def floor_lpush_awaited(self, n: int) -> float:
        await self.fresh()
        start = time.perf_counter()
        for i in range(n):
            await self.raw.lpush("floor:q", f"{i:036d}")
        return n / (time.perf_counter() - start)

    async def floor_lpush_pipelined(self, n: int) -> float:
        await self.fresh()
        start = time.perf_counter()
        await self._fill_floor(n)
        return n / (time.perf_counter() - start)

    async def _fill_floor(self, n: int) -> None:
        for offset in range(0, n, 1000):
            async with self.raw.pipeline(transaction=False) as pipe:
                for i in range(offset, min(n, offset + 1000)):
                    pipe.lpush("floor:q", f"{i:036d}")
                await pipe.execute()

    async def floor_consume(self, n: int) -> float:
        await self.fresh()
        await self._fill_floor(n)
        claim = self.raw.register_script(FLOOR_CLAIM)
        done = 0
        start = time.perf_counter()
        while done < n:
            ids = await claim(keys=["floor:q", "floor:active"], args=[100, int(time.time() * 1000) + 30000])
            async with self.raw.pipeline(transaction=False) as pipe:
                for id_ in ids:
                    pipe.zrem("floor:active", id_)
                await pipe.execute()
            done += len(ids)
        return n / (time.perf_counter() - start)

    # -- tasqueue --

    def server(self, prefix: str) -> object:
        from tasqueue import Server
        from tasqueue_redis import RedisBroker, RedisResults

        broker = RedisBroker.from_url(self.url, prefix=prefix)
        return Server(broker, RedisResults.from_url(self.url, prefix=prefix), load_entrypoints=False)

    async def enqueue_one_by_one(self, n: int) -> float:
        from tasqueue import Job, JobOpts

        prefix = await self.fresh()
        async with self.server(prefix) as srv:  # type: ignore[attr-defined]
            jobs = [Job("noop", b"", JobOpts(queue=QUEUE)) for _ in range(n)]
            start = time.perf_counter()
            for job in jobs:
                await srv.enqueue(job)
            return n / (time.perf_counter() - start)

    async def enqueue_bulk(self, n: int, prefix: str | None = None) -> float:
        from tasqueue import Job, JobOpts

        prefix = prefix or await self.fresh()
        async with self.server(prefix) as srv:  # type: ignore[attr-defined]
            start = time.perf_counter()
            for offset in range(0, n, 1000):
                await srv.enqueue_many([Job("noop", b"", JobOpts(queue=QUEUE)) for _ in range(min(1000, n - offset))])
            return n / (time.perf_counter() - start)

    async def _success_span(self, prefix: str, expected: int) -> float:
        """Seconds from the first to the last id added to the success list (Redis clock)."""
        key = f"{prefix}:success"
        async with asyncio.timeout(max(600, expected / 100)):
            while await self.raw.zcard(key) < expected:  # noqa: ASYNC110 - the worker is another process
                await asyncio.sleep(0.05)
        first = await self.raw.zrange(key, 0, 0, withscores=True)
        last = await self.raw.zrange(key, -1, -1, withscores=True)
        return (last[0][1] - first[0][1]) / 1e6

    async def process(self, n: int, concurrency: int) -> tuple[float, float, float, float]:
        """Jobs per second, peak RSS (MB), and CPU per job (µs) of the worker (start-up included) and of Redis."""
        prefix = await self.fresh()
        await self.enqueue_bulk(n, prefix)
        redis_before = peer_libs.redis_cpu_seconds(await self.raw.info("cpu"))
        worker = WorkerProcess(self.url, prefix, concurrency, self.logdir)
        try:
            span = await self._success_span(prefix, n)
            rss = worker.peak_rss_mb()
            cpu = peer_libs.cpu_seconds([worker.proc.pid])
            redis_cpu = peer_libs.redis_cpu_seconds(await self.raw.info("cpu")) - redis_before
        finally:
            worker.stop()
        return (n - 1) / span, rss, cpu / n * 1e6, redis_cpu / n * 1e6

    async def workflows(self, kind: str, count: int, size: int, concurrency: int) -> tuple[float, float]:
        from tasqueue import Chain, Group, Job, JobOpts

        prefix = await self.fresh()
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

    async def idle_latency(self, samples: int, *, profile: bool = False) -> tuple[list[float], list[float]]:
        from tasqueue import Job, JobOpts

        prefix = await self.fresh()
        worker = WorkerProcess(self.url, prefix, 10, self.logdir)
        from_call: list[float] = []
        from_return: list[float] = []
        try:
            await worker.ready()
            if profile:  # logging every command costs Redis a little: not in the timed run
                await self.raw.config_set("slowlog-max-len", 100_000)
                await self.raw.config_set("slowlog-log-slower-than", 0)  # every command, with its duration
                await self.raw.slowlog_reset()
            async with self.server(prefix) as srv:  # type: ignore[attr-defined]
                marks: list[tuple[str, float, float]] = []
                for _ in range(samples):
                    await asyncio.sleep(0.02)  # pacing: let the worker go idle (blocked on Redis) again
                    t0 = time.time()
                    job_id = await srv.enqueue(Job("stamp", b"", JobOpts(queue=QUEUE)))
                    marks.append((job_id, t0, time.time()))
                if profile:
                    self.script_us = await self._script_times()
                for job_id, t0, t1 in marks:
                    await srv.wait(job_id, timeout=30, poll=0.01)
                    started = float(await srv.get_result(job_id))
                    from_call.append(started - t0)
                    from_return.append(started - t1)
        finally:
            if profile:
                await self.raw.config_set("slowlog-log-slower-than", 10_000)
            worker.stop()
        return from_call, from_return

    async def _script_times(self) -> dict[str, float]:
        """Median Redis time (µs) of each tasqueue script in the slow log (which now logs all)."""
        from tasqueue_redis import _lua

        names = {s.sha.encode(): s.name for s in (_lua.ENQUEUE, _lua.ENQUEUE_RECORDS, _lua.CLAIM, _lua.RESULTS_SET, _lua.ACK)}
        times: dict[str, list[float]] = {}
        for entry in await self.raw.slowlog_get(100_000):
            parts = entry["command"].split()
            if len(parts) > 1 and parts[0].upper() == b"EVALSHA" and parts[1] in names:
                times.setdefault(names[parts[1]], []).append(entry["duration"])
        return {name: statistics.median(values) for name, values in times.items()}


IMPORT_RSS = """
import sys
if sys.argv[1] == "all":
    import redis.asyncio
import tasqueue.server, tasqueue._worker
for line in open("/proc/self/status"):
    if line.startswith("VmHWM:"):
        print(int(line.split()[1]) / 1024)
"""


def import_rss_mb() -> dict[str, float]:
    """Peak RSS of processes that import the libraries and do nothing: the floor of any worker."""
    out = {}
    for what in ("all", "core"):
        done = subprocess.run([sys.executable, "-c", IMPORT_RSS, what], capture_output=True, text=True, check=True)
        out[what] = float(done.stdout)
    return out


async def floor_latency(b: Bench, samples: int) -> list[float]:
    """Bare LPUSH -> BLPOP in another process, paced like the tasqueue measurement."""
    prefix = await b.fresh()
    key, out = f"{prefix}:q", f"{prefix}:out"
    consumer = WorkerProcess(b.url, prefix, 1, b.logdir, mode="floor")
    try:
        async with asyncio.timeout(30):
            await b.raw.blpop([out], timeout=30)  # "ready"
        for i in range(samples):
            await asyncio.sleep(0.02)
            await b.raw.lpush(key, f"{i} {time.time()!r}")
        await b.raw.lpush(key, "stop")
        lat = []
        for _ in range(samples):
            item = await b.raw.blpop([out], timeout=30)
            assert item is not None
            _, sent, got = item[1].split()
            lat.append(float(got) - float(sent))
    finally:
        consumer.stop()
    return lat


def _resp(*args: str) -> bytes:
    out = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def raw_consumer_main(host: str, port: int, key: str, out: str) -> None:
    """The raw-socket floor's consumer: blocking BLPOP on a plain socket, no asyncio, no client library."""
    blocked = socket.create_connection((host, port))
    blocked.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    writer = socket.create_connection((host, port))
    writer.sendall(_resp("RPUSH", out, "ready"))
    writer.recv(64)
    while True:
        blocked.sendall(_resp("BLPOP", key, "1"))
        reply = blocked.recv(4096)
        now = time.time()
        if reply.startswith(b"*-1"):
            continue
        sent = reply.split(b"\r\n")[-2].decode()
        if sent == "stop":
            return
        writer.sendall(_resp("RPUSH", out, f"{sent} {now!r}"))
        writer.recv(64)


async def raw_floor_latency(b: Bench, samples: int) -> list[float]:
    """LPUSH -> BLPOP with plain blocking sockets at both ends: what this host allows at all."""
    from urllib.parse import urlsplit

    prefix = await b.fresh()
    key, out = f"{prefix}:q", f"{prefix}:out"
    where = urlsplit(b.url)
    host, port = where.hostname or "127.0.0.1", where.port or 6379
    consumer = WorkerProcess(b.url, prefix, 1, b.logdir, mode="raw")
    try:
        async with asyncio.timeout(30):
            await b.raw.blpop([out], timeout=30)  # "ready"
        producer = socket.create_connection((host, port))
        producer.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(samples):
            await asyncio.sleep(0.02)
            producer.sendall(_resp("LPUSH", key, repr(time.time())))
            producer.recv(64)
        producer.sendall(_resp("LPUSH", key, "stop"))
        producer.recv(64)
        producer.close()
        lat = []
        for _ in range(samples):
            item = await b.raw.blpop([out], timeout=30)
            assert item is not None
            sent, got = item[1].split()
            lat.append(float(got) - float(sent))
    finally:
        consumer.stop()
    return lat


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


class Table:
    """Every figure of the run by measure and column, printed at the end with the target ratios."""

    COLUMNS = ("tasqueue", "huey", "dramatiq", "floor")

    def __init__(self) -> None:
        self.values: dict[str, dict[str, list[float]]] = {}
        self.units: dict[str, str] = {}

    def add(self, measure: str, column: str, value: float, unit: str) -> None:
        self.values.setdefault(measure, {}).setdefault(column, []).append(value)
        self.units[measure] = unit
        print(f"  {column:<9} {measure:<44} {self.fmt(value, unit):>14}", flush=True)

    def get(self, measure: str, column: str) -> float | None:
        values = self.values.get(measure, {}).get(column)
        return statistics.median(values) if values else None

    @staticmethod
    def fmt(value: float, unit: str) -> str:
        return (
            f"{value:,.2f} {unit}" if unit in {"ms", "MB"} else f"{value:,.1f} {unit}" if unit == "µs" else f"{value:,.0f} {unit}"
        )

    def cell(self, measure: str, column: str) -> str:
        values = self.values.get(measure, {}).get(column)
        if not values:
            return "-"
        text = self.fmt(statistics.median(values), self.units[measure])
        if len(values) > 1:
            low, high = min(values), max(values)
            digits = {"ms": 2, "MB": 2, "µs": 1}.get(self.units[measure], 0)
            text += f" [{low:,.{digits}f}-{high:,.{digits}f}]"
        return text

    def ratio(self, measure: str) -> str:
        """The issue's target for this measure, and where tasqueue stands (on the medians)."""
        tq = self.get(measure, "tasqueue")
        if tq is None:
            return ""
        peers = {c: v for c in ("huey", "dramatiq") if (v := self.get(measure, c)) is not None}
        floor = self.get(measure, "floor")
        if measure.startswith("process"):
            if not peers:
                return ""
            best = max(peers, key=peers.__getitem__)
            return f"{tq / peers[best]:.1f}x {best} (target >= 8x)"
        if measure == "enqueue one by one":
            parts = [f"{tq / peers['huey']:.2f}x huey (target >= 1x)"] if "huey" in peers else []
            if floor:
                parts.append(f"{tq / floor:.0%} of LPUSH")
            return ", ".join(parts)
        if measure == "idle latency p50":
            return f"{(tq - floor):+.2f} ms vs LPUSH->BLPOP (target <= +0.3)" if floor is not None else ""
        if measure == "worker peak RSS":
            return "(target <= 35 MB)"
        if self.units[measure] == "µs" and peers:
            return ", ".join(f"{tq / v:.2f}x {c}'s" for c, v in peers.items())
        if measure.endswith("run") and "dramatiq" in peers:
            plain = self.get(f"process {self.large:,}", "tasqueue")
            same = f", {tq / plain:.0%} of plain jobs" if plain else ""
            return f"{tq / peers['dramatiq']:.1f}x dramatiq (target >= 5x){same}"
        if floor and self.units[measure] == "jobs/s":
            return f"{tq / floor:.0%} of the floor"
        return ""

    large = 0

    def print(self) -> None:
        widths = [44, *(24,) * len(self.COLUMNS)]
        head = ["", *self.COLUMNS, "tasqueue vs target"]
        print("\n" + "  ".join(h.ljust(w) for h, w in zip(head, widths, strict=False)) + head[-1])
        for measure in self.values:
            cells = [measure, *(self.cell(measure, c) for c in self.COLUMNS)]
            print("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + self.ratio(measure))


async def run(url: str, args: argparse.Namespace, logdir: Path) -> None:
    b = Bench(url, logdir)
    info = await b.raw.info("server")
    aof = (await b.raw.config_get("appendonly"))["appendonly"]
    print(f"tasqueue-redis benchmark: Redis {info['redis_version']} at {url} (appendonly {aof}), Python {sys.version.split()[0]}")
    print(f"one host, {os.cpu_count()} CPUs shared by Redis, the worker processes and this producer process")
    uvloop = importlib.util.find_spec("uvloop") is not None
    print(f"tasqueue's worker loop: {args.loop} (uvloop {'installed' if uvloop else 'not installed'})")
    peers, missing = peer_libs.load(url, [p for p in args.peers.split(",") if p])
    for note in missing:
        print(note)
    pb = peer_libs.PeerBench(url, logdir)
    table = Table()
    table.large = args.jobs[1]
    try:
        for repeat in range(args.repeat):
            if args.repeat > 1:
                print(f"\nround {repeat + 1} of {args.repeat}")
            if not args.latency_only:
                await throughput(b, pb, peers, table, args)
            await latency(b, pb, peers, table, args)
        table.print()
        if not args.latency_only:
            base = import_rss_mb()
            imports = f"tasqueue + redis.asyncio {base['all']:.1f} MB, tasqueue alone {base['core']:.1f} MB"
            print(f"worker peak RSS floor: a process that only imports {imports}")
        await b.idle_latency(100, profile=True)
        for name, us in sorted(b.script_us.items()):
            print(f"Redis time of tasqueue's {name} script in a second idle run (median): {us:.0f} µs")
    finally:
        pb.close()
        await b.raw.flushall()
        await b.raw.aclose()


async def latency(b: Bench, pb: peer_libs.PeerBench, peers: list[peer_libs.Peer], table: Table, args: argparse.Namespace) -> None:
    print(f"\nidle latency, enqueue call -> handler start ({args.samples} samples, one every 20 ms)")
    call, ret = await b.idle_latency(args.samples)
    for p in (50, 99):
        table.add(f"idle latency p{p}", "tasqueue", pct(call, p) * 1000, "ms")
    table.add("idle latency p50, from enqueue returned", "tasqueue", pct(ret, 50) * 1000, "ms")
    for peer in peers:
        lat = pb.idle_latency(peer, args.samples, args.concurrency)
        for p in (50, 99):
            table.add(f"idle latency p{p}", peer.name, pct(lat, p) * 1000, "ms")
    bare = await floor_latency(b, args.samples)
    for p in (50, 99):
        table.add(f"idle latency p{p}", "floor", pct(bare, p) * 1000, "ms")
    raw = await raw_floor_latency(b, args.samples)
    table.add("idle latency p50, raw sockets (no asyncio)", "floor", pct(raw, 50) * 1000, "ms")


async def throughput(
    b: Bench, pb: peer_libs.PeerBench, peers: list[peer_libs.Peer], table: Table, args: argparse.Namespace
) -> None:
    small, large = args.jobs
    c = args.concurrency
    # One-by-one enqueue in alternating rounds (best of each), so that a noisy neighbour on the
    # host skews every library alike.
    print(f"\nenqueue one by one (best of {args.rounds} alternating rounds x {args.one_by_one:,})")
    best: dict[str, float] = {}
    for _ in range(args.rounds):
        best["floor"] = max(best.get("floor", 0.0), await b.floor_lpush_awaited(args.one_by_one))
        best["tasqueue"] = max(best.get("tasqueue", 0.0), await b.enqueue_one_by_one(args.one_by_one))
        for peer in peers:
            best[peer.name] = max(best.get(peer.name, 0.0), pb.enqueue_one_by_one(peer, args.one_by_one))
    for column, rate in best.items():
        table.add("enqueue one by one", column, rate, "jobs/s")

    print(f"\nenqueue in batches of 1000 ({large:,})")
    table.add("enqueue batches of 1000", "floor", await b.floor_lpush_pipelined(large), "jobs/s")
    table.add("enqueue batches of 1000", "tasqueue", await b.enqueue_bulk(large), "jobs/s")

    print(f"\nprocess pre-enqueued no-op jobs, 1 worker process, concurrency {c}")
    rss: dict[str, float] = {}
    cpu: dict[str, tuple[float, float]] = {}
    for n in (small, large):
        measure = f"process {n:,}"
        table.add(measure, "floor", await b.floor_consume(n), "jobs/s")
        rate, rss["tasqueue"], *used = await b.process(n, c)
        cpu["tasqueue"] = (used[0], used[1])
        table.add(measure, "tasqueue", rate, "jobs/s")
        for peer in peers:
            rate, rss[peer.name], *used = pb.process(peer, n, c)
            cpu[peer.name] = (used[0], used[1])
            table.add(measure, peer.name, rate, "jobs/s")
    for column, mb in rss.items():
        table.add("worker peak RSS", column, mb, "MB")
    # CPU time per job moves far less with a busy neighbour than jobs per second do.
    for column, (worker_us, redis_us) in cpu.items():
        table.add(f"worker CPU per job ({large:,})", column, worker_us, "µs")
        table.add(f"Redis CPU per job ({large:,})", column, redis_us, "µs")

    for kind, count in (("chain", args.chains), ("group", args.groups)):
        if not count:
            continue
        print(f"\n{count:,} {kind}s of 10 ({count * 10:,} jobs)")
        enq, rate = await b.workflows(kind, count, 10, c)
        table.add(f"{kind}s of 10: enqueue", "tasqueue", enq, f"{kind}s/s")
        table.add(f"{kind}s of 10: run", "tasqueue", rate, "jobs/s")
        for peer in peers:
            if kind in peer.flows:
                enq, rate = pb.workflows(peer, kind, count, 10, c)
                table.add(f"{kind}s of 10: enqueue", peer.name, enq, f"{kind}s/s")
                table.add(f"{kind}s of 10: run", peer.name, rate, "jobs/s")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in {"worker", "floor", "raw"}:
        parser = argparse.ArgumentParser()
        parser.add_argument("worker")
        parser.add_argument("--url", required=True)
        parser.add_argument("--prefix", required=True)
        parser.add_argument("--concurrency", type=int, default=10)
        ns = parser.parse_args()
        if ns.worker == "floor":
            floor_consumer_main(ns.url, f"{ns.prefix}:q", f"{ns.prefix}:out")
        elif ns.worker == "raw":
            from urllib.parse import urlsplit

            where = urlsplit(ns.url)
            raw_consumer_main(where.hostname or "127.0.0.1", where.port or 6379, f"{ns.prefix}:q", f"{ns.prefix}:out")
        else:
            worker_main(ns.url, ns.prefix, ns.concurrency)
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a Redis to use (it is FLUSHALLed!); default: start one on a free port")
    parser.add_argument("--no-aof", action="store_true", help="start Redis without appendonly")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--chains", type=int, default=None, help="chains of 10 to run (default 10,000)")
    parser.add_argument("--groups", type=int, default=None, help="groups of 10 to run (default 10,000)")
    parser.add_argument("--samples", type=int, default=300, help="idle-latency samples")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of the one-by-one enqueue figures")
    parser.add_argument("--latency-only", action="store_true", help="only the idle-latency figures")
    parser.add_argument("--peers", default="huey,dramatiq", help="peers to run alongside (comma-separated; '' for none)")
    parser.add_argument("--repeat", type=int, default=1, help="run everything N times; the table shows medians [ranges]")
    parser.add_argument(
        "--loop", default="auto", help="tasqueue worker's event loop: auto (uvloop if installed), asyncio, uvloop"
    )
    args = parser.parse_args()
    os.environ["BENCH_LOOP"] = args.loop  # the worker processes inherit it
    args.jobs = (2_000, 10_000) if args.quick else (20_000, 100_000)
    args.one_by_one = 2_000 if args.quick else 5_000
    default_flows = 500 if args.quick else 10_000
    args.chains = default_flows if args.chains is None else args.chains
    args.groups = default_flows if args.groups is None else args.groups
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as tmp:
        logdir = Path(tmp)
        proc = None
        url = args.url
        if url is None:
            proc, url = start_redis(logdir, aof=not args.no_aof)
        try:
            asyncio.run(run(url, args, logdir))
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(10)


if __name__ == "__main__":
    main()
