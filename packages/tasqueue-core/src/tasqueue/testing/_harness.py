"""``Harness``: an application's Server, on memory://, with its worker running inside the test.

It is the same engine a deployment runs (the worker, its middleware, retries, timeouts and
schedules), not an eager shortcut; only the backends and the clock are swapped for the test.
"""

from __future__ import annotations

import asyncio
import time
from types import TracebackType
from typing import Self

from tasqueue._clock import Clock as WallClock
from tasqueue.broker import Broker
from tasqueue.memory import MemoryBroker, MemoryResults
from tasqueue.results import Results
from tasqueue.server import Server
from tasqueue.testing._clock import Clock

__all__ = ["Harness"]

# Leases never run out while a test moves the clock by hours: a worker in the test cannot die.
_LEASE = 10 * 365 * 86400.0
_IDLE_CHECK = 0.001


class Harness:
    """Run ``server``'s worker in the test on memory://, with a clock the test moves.

    ::

        async with Harness(srv) as tq:          # srv: the application's Server, tasks registered
            job_id = await add.enqueue(AddArgs(a=1, b=2))
            await tq.drain()                    # run every job that is due, until idle
            assert await add.result(job_id) == 3
            tq.clock.advance(60)                # ETAs, retry delays, timeouts and cron ticks
            await tq.drain()

    While the harness is open the Server's ``broker`` and ``results`` are fresh memory://
    backends driven by ``clock`` (its own are put back, untouched, afterwards), and the running
    loop's time is the clock's. The worker starts at the first ``drain`` (or ``start``), so tasks
    may still be registered before that.
    """

    def __init__(self, server: Server | None = None) -> None:
        self.server = server if server is not None else Server()
        self.clock = Clock()
        self.broker = MemoryBroker(visibility_timeout=_LEASE, clock=self.clock.monotonic)
        self.results = MemoryResults(clock=self.clock.monotonic)
        self._saved: tuple[Broker, Results, WallClock] | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        srv = self.server
        if srv.running_loop is not None:
            msg = "the Server's worker is running already; a Harness runs it itself"
            raise RuntimeError(msg)
        self.clock.install(asyncio.get_running_loop())
        self._saved = (srv.broker, srv.results, srv.clock)
        srv.broker, srv.results, srv.clock = self.broker, self.results, self.clock
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        srv = self.server
        grace = srv.shutdown_timeout
        try:
            if self._task is not None:
                # A job still running when the test ends is handed back at once, not waited for.
                srv.shutdown_timeout = 0.0
                await srv.stop()
                if not self._task.done():
                    self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)
        finally:
            srv.shutdown_timeout = grace
            assert self._saved is not None
            self.server.broker, self.server.results, self.server.clock = self._saved
            self.clock.uninstall()

    async def start(self) -> None:
        """Start the worker (``drain`` does it when needed)."""
        if self._task is not None:
            return
        self._task = asyncio.create_task(self.server.start(handle_signals=False), name="tasqueue-harness")
        while self.server.running_loop is None:
            if self._task.done():
                self._task.result()  # raise what start() raised
                msg = "the worker stopped while starting"
                raise RuntimeError(msg)
            await asyncio.sleep(0)

    async def drain(self, *, timeout: float = 30.0) -> None:
        """Run every job that is due until no queue has one due or running; delayed ones stay.

        Jobs that come due meanwhile (follow-ups, a retry without delay) run too. Raises
        ``TimeoutError`` if the queues are still busy after ``timeout`` real seconds (a handler
        waiting on a time that only ``clock.advance`` brings, say).
        """
        await self.start()
        assert self._task is not None
        give_up = time.monotonic() + timeout
        queues = list(self.server.queues)
        while True:
            if self._task.done():
                self._task.result()
                msg = "the worker stopped during drain()"
                raise RuntimeError(msg)
            busy = {q: n for q in queues if (n := self.broker.outstanding(q))}
            if not busy:
                return
            if time.monotonic() > give_up:
                msg = (
                    f"drain(): still busy after {timeout:g}s (due or running jobs per queue: {busy}); a handler "
                    "may be waiting for time to pass: move it with clock.advance() while it runs"
                )
                raise TimeoutError(msg)
            # Real time, however far the clock was moved: this only lets the worker run.
            await asyncio.sleep(_IDLE_CHECK)

    def __repr__(self) -> str:
        return f"Harness({self.server!r}, {self.clock!r})"
