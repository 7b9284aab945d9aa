"""The ``tasqueue`` command against a real Redis, driven the way an operator drives it: as processes.

Workers and commands run as subprocesses (``python -m tasqueue.cli``) on the session's throwaway
redis-server, each test under a key prefix of its own. Conditions are checked through an
Inspector in this process; the worker processes append what they ran to a ledger file.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from servers import free_port
from tasqueue import Inspector, JobState, Server
from tasqueue.inspector import WorkerInfo

APP = """
import asyncio
import os
from pathlib import Path

from tasqueue import JobCtx, Server

URL, PREFIX = os.environ["TQ_URL"], os.environ["TQ_PREFIX"]
LEDGER, BROKEN = Path(os.environ["TQ_LEDGER"]), Path(os.environ["TQ_BROKEN"])
srv = Server(
    f"{URL}?prefix={PREFIX}&visibility_timeout=2",
    f"{URL}?prefix={PREFIX}",
    fetch_timeout=0.5,
    shutdown_timeout=5,
)


def note(payload: bytes) -> None:
    with LEDGER.open("a") as ledger:
        ledger.write(f"{os.getpid()} {payload.decode()}\\n")


@srv.task("hello", queue="main", concurrency=2)
async def hello(payload: bytes, ctx: JobCtx) -> bytes:
    await asyncio.sleep(0.05)
    note(payload)
    return payload


@srv.task("flaky", queue="main")
async def flaky(payload: bytes, ctx: JobCtx) -> None:
    if BROKEN.exists():
        raise RuntimeError("broken on purpose")
    note(payload)


@srv.task("marker", queue="side", concurrency=1)
async def marker(payload: bytes, ctx: JobCtx) -> None:
    note(payload)
"""

TIMEOUT = 30.0


class Env:
    """One test's app directory, ledger, URL and processes."""

    def __init__(self, directory: Path, url: str, prefix: str) -> None:
        self.dir = directory
        self.url = f"{url}?prefix={prefix}"
        self.ledger = directory / "ledger.txt"
        self.broken = directory / "broken"
        (directory / "app.py").write_text(textwrap.dedent(APP))
        self.env = {
            **os.environ,
            "TQ_URL": url,
            "TQ_PREFIX": prefix,
            "TQ_LEDGER": str(self.ledger),
            "TQ_BROKEN": str(self.broken),
            "TASQUEUE_BROKER": self.url,
            "TASQUEUE_RESULTS": self.url,
            "PYTHONPATH": "",
        }
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []

    def tq(self, *args: str, stdin: bytes | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run one ``tasqueue`` command to its end."""
        return subprocess.run(
            [sys.executable, "-m", "tasqueue.cli", *args],
            cwd=self.dir,
            env=env or self.env,
            input=stdin.decode() if stdin is not None else None,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )

    def start_worker(self, *args: str) -> subprocess.Popen[bytes]:
        log = self.dir / f"worker-{len(self.procs)}.log"
        self.logs.append(log)
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "tasqueue.cli", "worker", "app:srv", *args],
                cwd=self.dir,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs.append(proc)
        return proc

    def log(self, n: int = 0) -> str:
        return self.logs[n].read_text()

    def ran(self) -> list[tuple[int, str]]:
        if not self.ledger.exists():
            return []
        text = self.ledger.read_text()
        return [
            (int(pid), payload) for pid, payload in (line.split(" ", 1) for line in text[: text.rfind("\n") + 1].splitlines())
        ]

    def inspect(self, read: Callable[[Inspector], Any]) -> Any:
        async def go() -> Any:
            async with Server(self.url, self.url, load_entrypoints=True) as srv:
                return await read(Inspector(srv))

        return asyncio.run(go())

    def count(self, queue: str, state: JobState) -> int:
        return int(self.inspect(lambda i: _count(i, queue, state)))

    def workers(self) -> list[WorkerInfo]:
        return list(self.inspect(lambda i: i.workers()))

    def wait(self, check: Callable[[], Any], what: str, timeout: float = TIMEOUT) -> None:
        """Poll ``check`` until true; fail early if a worker exits that nobody stopped."""
        deadline = time.monotonic() + timeout
        while not check():
            for n, proc in enumerate(self.procs):
                if proc.poll() is not None and proc.returncode != -signal.SIGKILL:
                    pytest.fail(f"worker exited with {proc.returncode} while waiting for {what}:\n{self.log(n)}")
            if time.monotonic() > deadline:
                logs = "\n".join(self.log(n) for n in range(len(self.procs)))
                pytest.fail(f"timed out after {timeout}s waiting for {what}\n{logs}")
            time.sleep(0.05)  # the workers are other processes: polling Redis or their ledger is the wait

    def stop(self) -> None:
        """Drain what still runs (a supervisor stops its workers too), then kill what did not stop."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


async def _count(insp: Inspector, queue: str, state: JobState) -> int:
    return (await insp.queue(queue)).counts.get(state)


@pytest.fixture
def env(tmp_path: Path, redis_server: Any, prefix: str) -> Iterator[Env]:
    made = Env(tmp_path, redis_server.url, prefix)
    yield made
    made.stop()


def _state(env: Env, job_id: str) -> str:
    done = env.tq("job", job_id, "--json")
    assert done.returncode == 0, done.stderr
    return str(json.loads(done.stdout)["state"])


def test_a_job_enqueued_by_one_process_runs_in_a_worker_process(env: Env) -> None:
    worker = env.start_worker()
    enqueued = env.tq("enqueue", "hello", "from the shell", "--queue", "main")
    assert enqueued.returncode == 0, enqueued.stderr
    job_id = enqueued.stdout.strip()
    env.wait(lambda: (worker.pid, "from the shell") in env.ran(), "the job to run")
    env.wait(lambda: _state(env, job_id) == "successful", "its status")
    result = env.tq("result", job_id)
    assert (result.returncode, result.stdout) == (0, "from the shell")
    piped = env.tq("enqueue", "hello", "-", "--queue", "main", "--json", stdin=b"from stdin")
    assert json.loads(piped.stdout)["queue"] == "main"
    env.wait(lambda: (worker.pid, "from stdin") in env.ran(), "the piped job to run")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(TIMEOUT) == 0
    assert "worker stopped" in env.log()


def test_two_processes_share_the_jobs_and_a_killed_one_is_restarted(env: Env) -> None:
    supervisor = env.start_worker("--processes", "2", "--queues", "main", "--concurrency", "2")
    env.wait(lambda: len(env.workers()) == 2, "two live workers")
    first = {w.pid for w in env.workers()}
    assert supervisor.pid not in first
    assert all(w.queues == {"main": 2} for w in env.workers())  # the queue selection and concurrency override
    n = 40
    ids = [env.tq("enqueue", "hello", f"job-{i}", "--queue", "main").stdout.strip() for i in range(2)]
    # The rest go in through Python, not 38 more interpreter starts.
    ids += env.inspect(lambda insp: _enqueue_many(insp, [f"job-{i}".encode() for i in range(2, n)]))
    env.wait(lambda: {pid for pid, _ in env.ran()} == first, "both processes to run jobs")
    victim = min(first)
    os.kill(victim, signal.SIGKILL)
    env.wait(lambda: {p for _, p in env.ran()} >= {f"job-{i}" for i in range(n)}, "every job, the killed worker's too")
    env.wait(lambda: len(env.workers()) == 2 and victim not in {w.pid for w in env.workers()}, "a restarted worker")
    env.wait(lambda: env.inspect(lambda insp: _states(insp, ids)) == {"successful"}, "every job's record to say successful")
    assert re.search(rf"worker \d \(pid {victim}\) died after [\d.]+s: killed by SIGKILL; restarting in", env.log())
    supervisor.send_signal(signal.SIGTERM)
    assert supervisor.wait(TIMEOUT) == 0
    log = env.log()
    assert "draining 2 worker(s)" in log and "all workers stopped" in log
    assert env.workers() == []


async def _enqueue_many(insp: Inspector, payloads: list[bytes]) -> list[str]:
    from tasqueue import Job, JobOpts

    return await insp.server.enqueue_many([Job("hello", p, JobOpts(queue="main")) for p in payloads])


async def _states(insp: Inspector, ids: list[str]) -> set[str]:
    return {(await insp.job(i)).state.value for i in ids}


def test_pause_stops_consumption_and_resume_restarts_it(env: Env) -> None:
    worker = env.start_worker()
    env.wait(lambda: len(env.workers()) == 1, "a live worker")
    paused = env.tq("pause", "main")
    assert (paused.returncode, paused.stdout.split(":")[0]) == (0, "paused main")
    env.wait(lambda: any("main" in w.paused for w in env.workers()), "the worker to leave the queue alone")
    held = env.tq("enqueue", "hello", "held", "--queue", "main").stdout.strip()
    marker = env.tq("enqueue", "marker", "marker", "--queue", "side").stdout.strip()
    env.wait(lambda: (worker.pid, "marker") in env.ran(), "the other queue's later job")
    assert _state(env, held) == "queued"
    shown = json.loads(env.tq("queues", "--json").stdout)
    assert {q["name"]: (q["paused"], q["counts"]["queued"]) for q in shown}["main"] == (True, 1)
    assert env.tq("resume", "main").returncode == 0
    env.wait(lambda: (worker.pid, "held") in env.ran(), "the held job to run after resume")
    assert _state(env, marker) == "successful"


def test_retry_of_all_failed_jobs_of_a_queue_runs_them_again(env: Env) -> None:
    env.broken.touch()
    env.start_worker()
    ids = [env.tq("enqueue", "flaky", f"f{i}", "--queue", "main").stdout.strip() for i in range(3)]
    env.wait(lambda: env.count("main", JobState.FAILED) == 3, "three failures")
    listed = env.tq("jobs", "--queue", "main", "--state", "failed", "--json")
    assert {j["id"] for j in json.loads(listed.stdout)["jobs"]} == set(ids)
    story = env.tq("job", ids[0])
    assert "RuntimeError: broken on purpose" in story.stdout and "traceback of the last failure" in story.stdout
    refused = env.tq("retry", "--queue", "main")
    assert refused.returncode == 1 and "add --yes" in refused.stderr
    env.broken.unlink()
    retried = env.tq("retry", "--queue", "main", "--yes")
    assert (retried.returncode, retried.stdout.strip()) == (0, "retried 3 of 3 job(s)")
    env.wait(lambda: {p for _, p in env.ran()} == {"f0", "f1", "f2"}, "the retried jobs to run")
    env.wait(lambda: env.count("main", JobState.SUCCESSFUL) == 3, "three successes")
    assert env.count("main", JobState.FAILED) == 0


def test_top_renders_in_a_terminal_and_shows_the_counts(env: Env) -> None:
    for i in range(3):
        assert env.tq("enqueue", "hello", f"t{i}", "--queue", "topq").returncode == 0
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 150, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "tasqueue.cli", "top", "--interval", "0.2"],
        cwd=env.dir,
        env={**env.env, "TERM": "xterm-256color"},
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
    )
    os.close(slave)
    screen = b""
    try:
        deadline = time.monotonic() + TIMEOUT
        pattern = re.compile(r"topq\s+3\s+0\s+0\s+0\s+0\s+0\b")
        while not pattern.search(_plain_text(screen)):
            assert time.monotonic() < deadline, f"top never showed the counts:\n{_plain_text(screen)}"
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    screen += os.read(master, 65536)
                except OSError:
                    break
        assert "tasqueue top" in _plain_text(screen)
        os.write(master, b"q")
        assert proc.wait(TIMEOUT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


def _plain_text(screen: bytes) -> str:
    """The characters a terminal would show, escape sequences removed."""
    return re.sub(r"\x1b(\[[0-9;?]*[ -/]*[@-~]|\][^\x07]*\x07|[()][A-Z0-9]|[=>78])", "", screen.decode("utf-8", "replace"))


def test_every_error_is_one_line_with_its_exit_status(env: Env, tmp_path: Path) -> None:
    def one_line(done: subprocess.CompletedProcess[str], status: int, expected: str) -> None:
        assert done.returncode == status, (done.stdout, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
        assert lines[0].startswith("tasqueue: error: ") and expected in lines[0], lines[0]

    one_line(env.tq("worker", "nosuchmodule:srv"), 1, "cannot import module 'nosuchmodule'")
    one_line(env.tq("worker", "app:nothing"), 1, "module 'app' has no attribute 'nothing'")
    one_line(env.tq("worker", "app:srv", "--queues", "nope"), 1, "no task of this app consumes queue(s) nope")
    one_line(env.tq("job", "no-such-id"), 3, "job 'no-such-id' not found")
    one_line(env.tq("result", "no-such-id"), 3, "no result for job 'no-such-id'")
    dead = f"redis://127.0.0.1:{free_port()}/0?retries=0"  # without retries: the error comes at once
    one_line(env.tq("queues", "--broker", dead), 4, "could not list the queues: Error 111 connecting")
    one_line(env.tq("enqueue", "hello", "x", "--broker", dead), 4, "could not")
    one_line(env.tq("queues", "--broker", "bogus://x"), 1, "no broker registered for 'bogus://'")
    one_line(env.tq("jobs", "--limit", "0"), 1, "limit must be between 1 and 1000")
    one_line(env.tq("enqueue", "hello", "x", "--eta", "tomorrow"), 1, "not an ISO 8601 time")
    usage = env.tq("jobs", "--state", "nonsense")
    assert usage.returncode == 2 and "invalid choice: 'nonsense'" in usage.stderr
    (tmp_path / "brokenapp.py").write_text("raise RuntimeError('the app is broken')\n")
    one_line(env.tq("worker", "brokenapp:srv"), 1, "RuntimeError: the app is broken (set TASQUEUE_DEBUG=1")


def test_workers_stop_when_their_supervisor_is_killed(env: Env) -> None:
    supervisor = env.start_worker("--processes", "2")
    env.wait(lambda: len(env.workers()) == 2, "two live workers")
    children = [w.pid for w in env.workers()]
    supervisor.kill()
    supervisor.wait(TIMEOUT)
    # Orphaned workers drain and leave instead of running on unsupervised.
    env.wait(lambda: env.workers() == [] and not any(_alive(pid) for pid in children), "the orphaned workers to stop")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
