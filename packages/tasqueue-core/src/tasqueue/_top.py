"""``tasqueue top``: a live terminal view over the Inspector, drawn with rich (``tasqueue-core[cli]``).

Each frame is one snapshot: the queues with their counts, the workers with their in-flight
jobs, the latest failures. Throughput is the difference of each queue's ever-growing totals
between two frames, so it costs nothing extra to measure. Keys act on the selected queue
through the same Inspector: ``p`` pauses or resumes it, ``r`` retries its failed jobs (after a
``y``), ``q`` quits.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tasqueue import _output as out
from tasqueue.control import JobState
from tasqueue.errors import ConfigurationError
from tasqueue.inspector import Inspector, JobFilter, JobSummary, QueueInfo, WorkerInfo

_FAILURE_QUEUES = 8
_FAILURES_SHOWN = 8


@dataclass
class Snapshot:
    queues: list[QueueInfo]
    workers: list[WorkerInfo]
    failures: list[JobSummary]
    at: float


@dataclass
class View:
    """What the screen shows besides the data: the selected queue, rates, a status line, a pending question."""

    selected: int = 0
    rates: dict[str, tuple[float, float]] = field(default_factory=dict)
    status: str = ""
    confirm: str = ""  # the queue whose failed jobs wait for a "y" to be retried
    previous: Snapshot | None = None


async def snapshot(insp: Inspector) -> Snapshot:
    queues = await insp.queues()
    workers = await insp.workers()
    failures: list[JobSummary] = []
    for q in [q for q in queues if q.counts.failed][:_FAILURE_QUEUES]:
        failures += (await insp.jobs(q.name, JobState.FAILED, limit=_FAILURES_SHOWN)).jobs
    far = datetime.min.replace(tzinfo=UTC)
    failures.sort(key=lambda j: j.at or far, reverse=True)
    return Snapshot(queues, workers, failures[:_FAILURES_SHOWN], time.monotonic())


def _rates(view: View, snap: Snapshot) -> None:
    before = view.previous
    if before is not None and snap.at > before.at:
        dt = snap.at - before.at
        old = {q.name: q.counts for q in before.queues}
        for q in snap.queues:
            c = old.get(q.name)
            if c is not None:
                done = max(q.counts.total_successful - c.total_successful, 0) / dt
                failed = max(q.counts.total_failed - c.total_failed, 0) / dt
                view.rates[q.name] = (done, failed)
    view.previous = snap


def render(snap: Snapshot, view: View, source: str, interval: float) -> Any:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    now = datetime.now(UTC)
    busy = sum(len(ids) for w in snap.workers for ids in w.in_flight.values())
    slots = sum(sum(w.queues.values()) for w in snap.workers)
    head = Text.assemble(
        ("tasqueue top", "bold"),
        f"  {source} · {len(snap.workers)} worker(s) · {busy}/{slots} busy · {now:%H:%M:%S} UTC · every {interval:g}s",
    )
    keys = Text("↑/↓ select   p pause/resume   r retry failed   q quit", style="dim")

    queues = Table(expand=True, box=None, header_style="bold", collapse_padding=True, pad_edge=False)
    for name in (
        "QUEUE",
        "QUEUED",
        "DELAYED",
        "RUNNING",
        "RETRYING",
        "SUCCESSFUL",
        "FAILED",
        "DONE/s",
        "FAIL/s",
        "WORKERS",
        "STATE",
    ):
        queues.add_column(name, justify="left" if name in {"QUEUE", "STATE"} else "right", no_wrap=True, min_width=len(name))
    for i, q in enumerate(snap.queues):
        c = q.counts
        done, failed = view.rates.get(q.name, (None, None))
        state = "paused" if q.paused else ("no workers" if not q.workers and (c.queued or c.delayed) else "active")
        queues.add_row(
            q.name,
            *(f"{c.get(s):,}" for s in JobState),
            "-" if done is None else f"{done:.1f}",
            "-" if failed is None else f"{failed:.1f}",
            str(q.workers),
            state,
            style="reverse" if i == view.selected else ("yellow" if q.paused else None),
        )
    if not snap.queues:
        queues.add_row("(no queues yet)", *[""] * 10)

    workers = Table(expand=True, box=None, header_style="bold", pad_edge=False)
    for name in ("WORKER", "HOST", "PID", "BUSY", "UP", "BEAT", "IN FLIGHT"):
        workers.add_column(name, no_wrap=True, overflow="ellipsis")
    for w in snap.workers:
        ids = [i for group in w.in_flight.values() for i in group]
        workers.add_row(
            w.id[:8],
            w.host,
            str(w.pid),
            f"{len(ids)}/{sum(w.queues.values())}",
            out.ago(w.started, now),
            out.ago(w.heartbeat, now),
            " ".join(i[:8] for i in ids[:6]) + (" …" if len(ids) > 6 else "") or "-",
        )

    failures = Table(expand=True, box=None, header_style="bold", pad_edge=False)
    for name in ("WHEN", "QUEUE", "TASK", "JOB", "ERROR"):
        failures.add_column(name, no_wrap=True, overflow="ellipsis", ratio=3 if name == "ERROR" else None)
    for j in snap.failures:
        failures.add_row(out.ago(j.at, now), j.queue, j.task, j.id[:8], out.one_line(j.error or "-", 200))

    parts: list[Any] = [head, keys, Text(""), queues, Text(""), Text("WORKERS", style="bold underline"), workers]
    parts += [Text(""), Text("LATEST FAILURES", style="bold underline"), failures]
    if view.confirm:
        parts += [
            Text(""),
            Text(f"retry every failed job of {view.confirm}? press y to confirm, any other key to cancel", style="bold yellow"),
        ]
    elif view.status:
        parts += [Text(""), Text(view.status, style="green")]
    return Group(*parts)


@contextlib.contextmanager
def _keys_mode(fd: int) -> Iterator[bool]:
    """Single keypresses without echo, while the view runs; nothing when stdin is not a terminal."""
    if not os.isatty(fd):
        yield False
        return
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield True
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


async def _act(insp: Inspector, snap: Snapshot, view: View, key: str) -> bool:
    """Handle one key; return False to quit."""
    if view.confirm:
        queue, view.confirm = view.confirm, ""
        if key == "y":
            report = await insp.retry(JobFilter(queue, JobState.FAILED))
            view.status = f"retried {report.done} failed job(s) of {queue}"
        else:
            view.status = "retry cancelled"
        return True
    if key in {"q", "\x03"}:
        return False
    if key in {"\x1b[A", "k"}:
        view.selected = max(view.selected - 1, 0)
    elif key in {"\x1b[B", "j"}:
        view.selected = min(view.selected + 1, max(len(snap.queues) - 1, 0))
    elif key in {"p", "r"} and snap.queues:
        q = snap.queues[min(view.selected, len(snap.queues) - 1)]
        if key == "p":
            if q.paused:
                await insp.resume(q.name)
                view.status = f"resumed {q.name}"
            else:
                await insp.pause(q.name)
                view.status = f"paused {q.name}: workers stop fetching from it"
        elif q.counts.failed:
            view.confirm = q.name
        else:
            view.status = f"{q.name} has no failed jobs"
    return True


async def run_top(insp: Inspector, *, interval: float = 1.0, once: bool = False) -> int:
    try:
        from rich.console import Console
        from rich.live import Live
    except ImportError:
        msg = "tasqueue top draws with rich, which is not installed: pip install 'tasqueue-core[cli]'"
        raise ConfigurationError(msg) from None
    if interval <= 0:
        msg = f"--interval must be > 0 seconds, got {interval}"
        raise ValueError(msg)
    source = f"{type(insp.server.broker).__name__}"
    console = Console()
    view = View()
    if once:
        # Two snapshots one interval apart, so that the frame has rates too.
        _rates(view, await snapshot(insp))
        await asyncio.sleep(interval)
        snap = await snapshot(insp)
        _rates(view, snap)
        console.print(render(snap, view, source, interval))
        return 0
    loop = asyncio.get_running_loop()
    keys: asyncio.Queue[str] = asyncio.Queue()
    fd = sys.stdin.fileno()
    with _keys_mode(fd) as interactive:
        if interactive:
            loop.add_reader(fd, lambda: keys.put_nowait(os.read(fd, 32).decode("utf-8", "replace")))
        try:
            snap = await snapshot(insp)
            _rates(view, snap)
            with Live(render(snap, view, source, interval), console=console, screen=True, auto_refresh=False) as live:
                deadline = loop.time() + interval
                while True:
                    try:
                        key = await asyncio.wait_for(keys.get(), max(deadline - loop.time(), 0))
                    except TimeoutError:
                        key = None
                    if key is not None:
                        if not await _act(insp, snap, view, key):
                            return 0
                        if loop.time() < deadline:
                            live.update(render(snap, view, source, interval), refresh=True)
                            continue
                    snap = await snapshot(insp)
                    _rates(view, snap)
                    view.selected = min(view.selected, max(len(snap.queues) - 1, 0))
                    live.update(render(snap, view, source, interval), refresh=True)
                    deadline = loop.time() + interval
        finally:
            if interactive:
                loop.remove_reader(fd)
