"""huey and dramatiq through the shapes bench_redis.py measures tasqueue in, on the same Redis.

Each peer runs as a new user runs it: its own worker CLI in a subprocess (one process, threads
at the benchmark's concurrency), its own producer API called one job at a time, its defaults
otherwise. Runs are timed inside the peer's worker from the first to the last completion
(``peer_span.Span``), as tasqueue's are timed by its success list. The apps themselves are in
``peer_huey.py`` and ``peer_dramatiq.py``; this module imports neither library until asked.
"""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


@dataclass
class Peer:
    name: str
    worker_args: Callable[[int], list[str]]  # concurrency -> argv after the interpreter
    send: Callable[[], object]  # enqueue one no-op job
    send_stamp: Callable[[int], object]  # enqueue the latency probe for one sample
    flows: dict[str, Callable[[int], object]] = field(default_factory=dict)  # "chain"/"group" -> enqueue one of size n


def load(url: str, names: list[str]) -> tuple[list[Peer], list[str]]:
    """The peers that are installed, and a note for each one that is not."""
    os.environ["BENCH_REDIS_URL"] = url  # the apps read it at import, as their workers do
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    peers, missing = [], []
    for name in names:
        try:
            app: Any = importlib.import_module(f"peer_{name}")
        except ImportError as exc:
            missing.append(f"{name} not measured ({exc}); `nox -s bench-redis` installs it")
            continue
        if name == "huey":
            peers.append(
                Peer(
                    "huey",
                    lambda c: ["-m", "huey.bin.huey_consumer", "peer_huey.huey", "-w", str(c), "-k", "thread"],
                    app.noop,
                    app.stamp,
                    {"chain": lambda n, app=app: app.huey.enqueue(app.chain(n))},
                )
            )
        elif name == "dramatiq":
            peers.append(
                Peer(
                    "dramatiq",
                    lambda c: ["-m", "dramatiq", "peer_dramatiq", "--processes", "1", "--threads", str(c)],
                    app.noop.send,
                    app.stamp.send,
                    {"chain": lambda n, app=app: app.chain(n).run(), "group": lambda n, app=app: app.group(n).run()},
                )
            )
        else:
            raise ValueError(f"unknown peer {name!r}; known: huey, dramatiq")
    return peers, missing


def cpu_seconds(pids: list[int]) -> float:
    """CPU time (user + system) the processes ``pids`` have used so far; gone ones count 0."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def redis_cpu_seconds(info: dict[str, Any]) -> float:
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


class PeerWorker:
    """A peer's worker CLI in its own session; ``expect`` completions end the timed span."""

    def __init__(self, peer: Peer, url: str, concurrency: int, expect: int, logdir: Path) -> None:
        self.log = logdir / f"{peer.name}-worker.log"
        env = {**os.environ, "BENCH_REDIS_URL": url, "BENCH_EXPECT": str(expect), "PYTHONPATH": str(HERE)}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, *peer.worker_args(concurrency)],
                cwd=HERE,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _tree(self) -> list[int]:
        pids, todo = [], [self.proc.pid]
        while todo:
            pid = todo.pop()
            pids.append(pid)
            try:
                children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            except OSError:
                continue
            todo.extend(int(c) for c in children)
        return pids

    def peak_rss_mb(self) -> float:
        """VmHWM of the process that runs the jobs: the CLI's worker child if it forks one, else itself."""
        tree = self._tree()
        peaks = []
        for pid in tree[1:] or tree:
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peaks.append(int(line.split()[1]) / 1024)
            except OSError:
                continue
        return max(peaks, default=float("nan"))

    def check(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"worker exited: {self.log.read_text(errors='replace')[-2000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


class PeerBench:
    """The measurements; each starts from an empty Redis (FLUSHALL)."""

    def __init__(self, url: str, logdir: Path) -> None:
        import redis

        self.url = url
        self.logdir = logdir
        self.client = redis.Redis.from_url(url)

    def close(self) -> None:
        self.client.flushall()
        self.client.close()

    def enqueue_one_by_one(self, peer: Peer, n: int) -> float:
        self.client.flushall()
        send = peer.send
        start = time.perf_counter()
        for _ in range(n):
            send()
        return n / (time.perf_counter() - start)

    def _span(self, worker: PeerWorker, expected: int) -> float:
        deadline = time.monotonic() + max(600, expected / 100)
        while time.monotonic() < deadline:
            item = self.client.blpop(["peer:span"], timeout=1)
            if item is not None:
                first, last = map(float, item[1].split())
                return last - first
            worker.check()
        raise TimeoutError(f"{expected} jobs did not finish; see {worker.log}")

    def process(self, peer: Peer, n: int, concurrency: int) -> tuple[float, float, float, float]:
        """For ``n`` pre-enqueued no-op jobs: jobs per second, the worker's peak RSS (MB), and
        the CPU per job (µs) of the worker's processes (start-up included) and of Redis."""
        self.client.flushall()
        for _ in range(n):
            peer.send()
        redis_before = redis_cpu_seconds(self.client.info("cpu"))
        worker = PeerWorker(peer, self.url, concurrency, n, self.logdir)
        try:
            span = self._span(worker, n)
            rss = worker.peak_rss_mb()
            cpu = cpu_seconds(worker._tree())
            redis_cpu = redis_cpu_seconds(self.client.info("cpu")) - redis_before
        finally:
            worker.stop()
        return (n - 1) / span, rss, cpu / n * 1e6, redis_cpu / n * 1e6

    def workflows(self, peer: Peer, kind: str, count: int, size: int, concurrency: int) -> tuple[float, float]:
        """Workflows enqueued per second (one by one), and jobs per second running them."""
        self.client.flushall()
        enqueue = peer.flows[kind]
        start = time.perf_counter()
        for _ in range(count):
            enqueue(size)
        enqueue_rate = count / (time.perf_counter() - start)
        worker = PeerWorker(peer, self.url, concurrency, count * size, self.logdir)
        try:
            span = self._span(worker, count * size)
        finally:
            worker.stop()
        return enqueue_rate, (count * size - 1) / span

    def idle_latency(self, peer: Peer, samples: int, concurrency: int) -> list[float]:
        """Enqueue call -> handler start (s), a job every 20 ms, after one warm-up job."""
        self.client.flushall()
        worker = PeerWorker(peer, self.url, concurrency, 0, self.logdir)
        try:
            peer.send_stamp(-1)
            deadline = time.monotonic() + 30
            while self.client.blpop(["peer:stamps"], timeout=1) is None:
                worker.check()
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{peer.name}'s worker did not start; see {worker.log}")
            sent = {}
            for i in range(samples):
                time.sleep(0.02)  # pacing: let the worker go idle again
                sent[i] = time.time()
                peer.send_stamp(i)
            lat = []
            for _ in range(samples):
                item = self.client.blpop(["peer:stamps"], timeout=30)
                if item is None:
                    raise TimeoutError(f"{peer.name} lost a latency probe; see {worker.log}")
                sample, started = item[1].split()
                lat.append(float(started) - sent[int(sample)])
        finally:
            worker.stop()
        return lat
