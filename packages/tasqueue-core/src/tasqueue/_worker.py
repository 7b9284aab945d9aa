"""The consumer half of a Server: fetch loops, slots, shutdown.

One fetch loop per queue leases up to as many jobs as the queue has free slots, plus a prefetch
(``_prefetch.py``), and starts a task per job; what happens to one job is ``_runner.py``. Outcomes
go to the ``Settler`` (``_settler.py``), which writes them in batches and then settles their
deliveries; the ``Heartbeat`` (``_heartbeat.py``) renews the leases of everything held meanwhile.

Besides the queues of its tasks, a worker watches the default queue, where a producer that did
not know a task's queue sends its jobs: each is moved to its task's queue, or, for a task no
worker has, ends as failed rather than waiting there for ever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections import deque
from collections.abc import Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tasqueue._clock import Clock
from tasqueue._heartbeat import Heartbeat
from tasqueue._options import Options
from tasqueue._outage import Outage
from tasqueue._prefetch import Prefetch
from tasqueue._presence import Presence
from tasqueue._publisher import Publisher, start_task
from tasqueue._runner import Run, Runner
from tasqueue._settler import Settler
from tasqueue.broker import Broker, Delivery
from tasqueue.jobs import DEFAULT_QUEUE
from tasqueue.middleware import EnqueueNext, Middleware
from tasqueue.results import Results
from tasqueue.tasks import QueueConfig, RegisteredTask

#: Seconds a stop spends, after ``shutdown_timeout``, handing jobs back and writing outcomes;
#: what is left then comes back when its lease runs out. A broker that does not answer must
#: not keep a stopping worker alive.
STOP_BOUND = 5.0


async def _cancel_within(tasks: Collection[asyncio.Future[Any]], timeout: float) -> set[asyncio.Future[Any]]:
    """Cancel ``tasks`` and wait at most ``timeout`` for them to end; return those that did not.

    A stop must be bounded even when a backend's client does not honour a cancellation (a
    cluster client stuck behind a cancelled pipeline was seen to): what is left keeps its
    lease and comes back when the lease runs out.
    """
    if not tasks:
        return set()
    for task in tasks:
        task.cancel()
    done, stuck = await asyncio.wait(tasks, timeout=timeout)
    for task in done:
        if not task.cancelled():
            task.exception()  # retrieved: gather(return_exceptions=True) did the same
    return stuck


class Worker:
    """Consumes every queue that has a registered task (and the default queue), until stopped."""

    def __init__(
        self,
        *,
        broker: Broker,
        results: Results,
        tasks: Mapping[str, RegisteredTask],
        queues: Mapping[str, QueueConfig],
        middleware: Sequence[Middleware],
        publisher: Publisher,
        enqueue: EnqueueNext,
        options: Options,
        clock: Clock,
        log: logging.Logger,
    ) -> None:
        self.broker = broker
        self.options = options
        self.log = log
        self.loop: asyncio.AbstractEventLoop | None = None
        self.task_queues = queues  # the queues of the registered tasks
        self.queues = {**queues}  # and the ones consumed
        self.queues.setdefault(DEFAULT_QUEUE, QueueConfig(1, explicit=False))  # watched, see the module docstring
        sync_queues = {t.opts.queue for t in tasks.values() if not t.is_async}
        sync_slots = sum(self.queues[q].concurrency for q in sync_queues)
        self._executor = ThreadPoolExecutor(sync_slots, thread_name_prefix="tasqueue-sync") if sync_slots else None
        self.presence = Presence(self)
        self._settler = Settler(
            results,
            broker,
            publisher.store_and_publish,
            log=log,
            retry_delay=lambda: options.backoff.delay(0),
            settled=self._settled,
            recorded=self.presence.finished,
        )
        self._runner = Runner(
            tasks=tasks,
            results=results,
            publisher=publisher,
            settler=self._settler,
            enqueue=enqueue,
            middleware=middleware,
            options=options,
            slots=self,
            presence=self.presence,
            executor=self._executor,
            clock=clock,
            log=log,
        )
        self._heartbeat = Heartbeat(broker, self._held, self._lost, log)
        self._runs: dict[asyncio.Task[None], Run] = {}
        self._running: dict[str, int] = dict.fromkeys(self.queues, 0)  # slots taken, per queue
        self._settling: dict[str, int] = dict.fromkeys(self.queues, 0)  # runs waiting for their follow-ups
        # Leased deliveries waiting for a slot (the prefetch), and jobs finished per queue.
        self._buffered: dict[str, deque[Delivery]] = {q: deque() for q in self.queues}
        self._completed: dict[str, int] = dict.fromkeys(self.queues, 0)
        self._slot_events: dict[str, asyncio.Event] = {q: asyncio.Event() for q in self.queues}
        # A redelivered job runs alone (see _policies.stalls_charged): the one running so, and
        # how many wait for their turn; no other job starts meanwhile.
        self._solo: Run | None = None
        self._solo_waiting = 0
        self._quiet = asyncio.Event()  # set when a slot frees up or a lone run ends
        self._stop_requested = asyncio.Event()
        self._stopped = asyncio.Event()
        self._hard_stop = False

    # ---- lifecycle -----------------------------------------------------------------------

    async def run(self) -> None:
        self.loop = asyncio.get_running_loop()
        settler = asyncio.create_task(self._settler.run(), name="tasqueue-settler")
        heartbeat = asyncio.create_task(self._heartbeat.run(), name="tasqueue-heartbeat")
        self.presence.start()
        consumers = [asyncio.create_task(self._consume(queue), name=f"tasqueue-consume:{queue}") for queue in self.queues]
        self.log.info(
            "worker started: queues %s, tasks %s",
            {q: c.concurrency for q, c in self.queues.items()},
            sorted(self._runner.tasks),
        )
        try:
            await self._stop_requested.wait()
        finally:
            # Cancelled from outside (or stopped): shut down gracefully either way.
            self.presence.stop()  # not cancel(): a control-plane call is never cut short
            await asyncio.shield(self._shutdown(consumers, heartbeat, settler))

    async def stop(self) -> None:
        self._stop_requested.set()
        await self._stopped.wait()

    def signal(self, sig: signal.Signals) -> None:
        if self._stop_requested.is_set():
            self.log.warning("second %s: handing running jobs back now", sig.name)
            self._hard_stop = True
            self._release_all()
        else:
            self.log.info("%s: finishing running jobs (up to %ss), then stopping", sig.name, self.options.shutdown_timeout)
        self._stop_requested.set()

    async def _shutdown(
        self, consumers: list[asyncio.Task[None]], heartbeat: asyncio.Task[None], settler: asyncio.Task[None]
    ) -> None:
        grace = self.options.shutdown_timeout
        loop = asyncio.get_running_loop()
        try:
            if await _cancel_within(consumers, STOP_BOUND):
                self.log.warning("shutdown: a fetch did not end when cancelled; leaving it behind")
            # Prefetched jobs go back all at once, alongside the running ones' grace.
            handing_back = asyncio.create_task(self._hand_back_buffered())
            running = list(self._runs)
            if running and not self._hard_stop:
                _, pending = await asyncio.wait(running, timeout=grace)
                if pending:
                    self.log.warning("shutdown: %d job(s) still running after %gs; handing them back", len(pending), grace)
            self._release_all()
            # Everything after the grace shares one bound: handing back takes a write and a nack
            # per job, a job whose handler is done may still run its callbacks, and a broker
            # that does not answer would retry each for long. What is left then comes back when
            # its lease runs out.
            end = loop.time() + STOP_BOUND
            _, stuck = await asyncio.wait([handing_back, *self._runs], timeout=STOP_BOUND)
            if stuck:
                self.log.warning("shutdown: %d job(s) not handed back in time; they return when their leases run out", len(stuck))
            await _cancel_within(stuck, STOP_BOUND)
            # The outcomes of finished jobs are written while the heartbeat still renews their leases.
            self._settler.close()
            _, stuck = await asyncio.wait([settler], timeout=max(end - loop.time(), 0.0))
            if stuck:
                self.log.error("shutdown: could not write the outcome of finished jobs; they will be redelivered")
                await _cancel_within([settler], STOP_BOUND)
            await _cancel_within([heartbeat], STOP_BOUND)
            # Best effort within the same bound: the record expires on its own anyway, and a
            # write stuck in a silent broker is not waited for.
            leaving = asyncio.ensure_future(self.presence.leave())
            if (await asyncio.wait([leaving], timeout=max(end - loop.time(), 0.1)))[1]:
                leaving.cancel()
        finally:
            if self._executor is not None:
                # Threads cannot be interrupted; one still running finishes in the background.
                self._executor.shutdown(wait=False, cancel_futures=True)
            self._stopped.set()
            self.log.info("worker stopped")

    async def _hand_back_buffered(self) -> None:
        """Give prefetched deliveries that never started back to the broker, for other workers, all at once."""
        failed: list[BaseException] = []

        async def hand_back(queue: str, d: Delivery) -> None:
            try:
                # The same bytes as new data: a delivery that never ran is no worker death.
                await self.broker.nack(queue, d, data=d.data)
            except Exception as exc:
                failed.append(exc)

        backs = [hand_back(queue, buffer.pop()) for queue, buffer in self._buffered.items() for _ in range(len(buffer))]
        await asyncio.gather(*backs)
        if failed:  # one line, not one per job: the broker is likely away
            self.log.warning(
                "could not hand back %d prefetched job(s) (%s); they return when their leases run out", len(failed), failed[0]
            )

    def _release_all(self) -> None:
        for task, run in self._runs.items():
            # A run whose handler is done has its outcome decided: it is written, not handed back.
            if not (run.released or run.finishing or run.settling):
                run.released = True
                run.cancelled = True
                task.cancel()

    # ---- fetching ------------------------------------------------------------------------

    async def _consume(self, queue: str) -> None:
        concurrency = self.queues[queue].concurrency
        freed = self._slot_events[queue]
        # Finished jobs whose outcome is still being written hold no handler slot; cap them so a
        # slow or unreachable results store pauses fetching instead of piling up work.
        settle_limit = max(concurrency * 4, 256)
        pending = self._settler.pending
        buffer = self._buffered[queue]
        loop = asyncio.get_running_loop()
        prefetch = Prefetch(concurrency, loop.time())
        outage = Outage(self.log, f"fetching from queue {queue!r}")
        while True:
            if self.presence.paused:
                await self.presence.gate(queue)
            want = concurrency + prefetch.extra() - self._running[queue] - len(buffer)
            if want <= 0 or pending.get(queue, 0) + self._settling[queue] >= settle_limit:
                freed.clear()
                await freed.wait()
                continue
            started = loop.time()
            try:
                deliveries = await self.broker.fetch(queue, want, timeout=self.options.fetch_timeout)
            except Exception as exc:
                await asyncio.sleep(outage.failed(exc))
                continue
            outage.ok()
            prefetch.fetched(want, len(deliveries), started, loop.time(), self._completed[queue])
            idle = self._running[queue] == 0
            buffer.extend(deliveries)
            self._dispatch(queue)
            if idle and deliveries:
                # An idle worker lets the jobs it just started reach their handlers before it
                # prepares the next fetch (a busy one fetches first, to keep its slots fed).
                await asyncio.sleep(0)

    # ---- slots ---------------------------------------------------------------------------

    def _dispatch(self, queue: str) -> None:
        """Start buffered deliveries while the queue has free slots and no job must run alone."""
        buffer = self._buffered[queue]
        concurrency = self.queues[queue].concurrency
        while buffer and self._running[queue] < concurrency and self._solo is None and not self._solo_waiting:
            run = Run(queue, buffer.popleft())
            self._running[queue] += 1
            task = start_task(self._runner.run(run))
            self._runs[task] = run
            task.add_done_callback(self._done)

    def _free_slot(self, queue: str) -> None:
        """A handler finished: count it, start a prefetched job in its slot, wake the fetch loop."""
        self._running[queue] -= 1
        self._completed[queue] += 1
        if self._buffered[queue] and not self._stop_requested.is_set():
            self._dispatch(queue)
        self._slot_events[queue].set()
        if self._solo_waiting:
            self._quiet.set()

    def _settled(self, queue: str) -> None:
        self._slot_events[queue].set()

    def _done(self, task: asyncio.Task[None]) -> None:
        run = self._runs.pop(task)
        if run.settling:
            self._settling[run.queue] -= 1
            self._slot_events[run.queue].set()
        elif run.thread is None:
            self._free_slot(run.queue)
        else:
            self._free_slot_after_thread(run)
        if self._solo is run:
            self._end_solo()
        if not task.cancelled() and task.exception() is not None:
            self.log.error("internal error handling job %s", run.delivery.id, exc_info=task.exception())

    def _free_slot_after_thread(self, run: Run) -> None:
        """Free the slot of a finished run, or, if its sync handler still runs (timed out, cut
        short), once that thread ends: a worker never starts more sync runs than it has threads."""
        thread = run.thread
        if thread is None or thread.done():
            self._free_slot(run.queue)
            return
        loop = asyncio.get_running_loop()

        def ended(_: object) -> None:
            with contextlib.suppress(RuntimeError):  # a closed loop: the worker is gone
                loop.call_soon_threadsafe(self._free_slot, run.queue)

        thread.add_done_callback(ended)

    def handed_over(self, run: Run) -> None:
        """The handler is done and the run only waits for its follow-ups: its slot goes to the next job."""
        run.settling = True
        self._settling[run.queue] += 1
        self._free_slot_after_thread(run)
        if self._solo is run:
            self._end_solo()

    async def alone(self, run: Run) -> None:
        """Wait until no other job of this worker is in flight; none starts until ``run`` is done."""
        self._solo_waiting += 1
        try:
            # Runs waiting here hold their slots but run nothing, so they do not count.
            while self._solo is not None or sum(self._running.values()) > self._solo_waiting:
                self._quiet.clear()
                await self._quiet.wait()
        except BaseException:
            self._solo_waiting -= 1
            self._wake()
            raise
        self._solo_waiting -= 1
        self._solo = run
        self.log.info("job %s comes back from a worker that died; running it alone", run.delivery.id)

    def _end_solo(self) -> None:
        """No job runs alone any more: start what was held back."""
        self._solo = None
        self._wake()

    def _wake(self) -> None:
        self._quiet.set()
        if not self._stop_requested.is_set():
            for queue in self.queues:
                self._dispatch(queue)
                self._slot_events[queue].set()

    def in_flight(self) -> dict[str, list[str]]:
        """Ids of the jobs this worker runs, by queue."""
        by_queue: dict[str, list[str]] = {}
        for run in self._runs.values():
            by_queue.setdefault(run.queue, []).append(run.delivery.id)
        return by_queue

    # ---- leases --------------------------------------------------------------------------

    def _held(self) -> dict[str, list[Delivery]]:
        by_queue: dict[str, list[Delivery]] = {}
        for run in self._runs.values():
            by_queue.setdefault(run.queue, []).append(run.delivery)
        for queue, delivery in self._settler.deliveries():
            by_queue.setdefault(queue, []).append(delivery)
        for queue, buffer in self._buffered.items():
            if buffer:
                by_queue.setdefault(queue, []).extend(buffer)
        return by_queue

    def _lost(self, lost: list[Delivery]) -> None:
        gone = {id(d) for d in lost}
        for buffer in self._buffered.values():
            kept = [d for d in buffer if id(d) not in gone]
            if len(kept) != len(buffer):
                buffer.clear()
                buffer.extend(kept)
        for task, run in self._runs.items():
            # A run whose handler is done needs no cancelling: its status write is refused if
            # another worker has the job now, and then nothing of its outcome takes effect.
            if id(run.delivery) in gone and not (run.finishing or run.settling or run.lost):
                self.log.warning("lost the lease on job %s (another worker may run it); cancelling this run", run.delivery.id)
                run.lost = True
                run.cancelled = True
                task.cancel()
