"""``Server``: registers tasks, enqueues jobs, groups and chains, answers queries, runs the worker.

The producer's path (message → record → broker) is ``_publisher.py``; the consumer half, what
happens to a job once a worker fetches it, starts in ``_worker.py``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Iterable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar, overload

import msgspec

from tasqueue import _loop, _recurring, _waiting
from tasqueue._clock import Clock, SystemClock
from tasqueue._codec import DecodeErrors, decode_chain, decode_group, decode_job, encode
from tasqueue._keys import chain_key, group_key, job_key, new_id, result_key, schedule_key
from tasqueue._loop import Loop
from tasqueue._options import Options
from tasqueue._publisher import Publisher
from tasqueue._typed import Codec
from tasqueue._worker import Worker
from tasqueue.broker import Broker
from tasqueue.errors import ConfigurationError, EnqueueError, NotFoundError
from tasqueue.handles import TaskDecorator
from tasqueue.jobs import DEFAULT_QUEUE, Backoff, Chain, Group, Job
from tasqueue.messages import ChainMessage, GroupMessage, JobMessage, JobStatus
from tasqueue.middleware import Middleware, compose_enqueue
from tasqueue.plugins import PluginHost
from tasqueue.results import Results
from tasqueue.tasks import Handler, QueueConfig, RegisteredTask, TaskOpts, is_async_callable

if TYPE_CHECKING:
    from tasqueue.sync import BlockingServer

__all__ = ["Server"]

T = TypeVar("T")

_TERMINAL = frozenset({JobStatus.SUCCESSFUL, JobStatus.FAILED})


class Server:
    """Producer and worker in one: register tasks, enqueue jobs, run them.

    Args:
        broker: A broker URL (resolved through the installed plugins) or a ``Broker`` object.
        results: A results-store URL or a ``Results`` object. Left out, a broker URL names both
            halves where a results store is registered for its scheme too (``Server("redis://…")``),
            else the results stay in a private ``memory://``.
        logger: The logger for everything this server logs; ``tasqueue.*`` loggers by default.
        plugins: Plugin objects (modules or instances with ``@hookimpl`` functions) to register
            besides the installed ones.
        load_entrypoints: Load installed plugins from the ``tasqueue`` entry-point group.
        middleware: Middleware wrapping enqueue and processing, outermost first; plugin
            middleware goes inside these.
        backoff: The default delay between retries.
        shutdown_timeout: Seconds a graceful stop lets running jobs finish before handing them back.
        max_stalls: A job whose worker died (or lost its lease) more than this many times in one
            attempt is parked as failed instead of being run again.
        fetch_timeout: Seconds one broker fetch waits for work before asking again.
        unknown_task_timeout: A job whose task this worker has no handler for is passed on to
            other workers of its queue (which may have it: a rolling deploy, specialised
            workers) for this many seconds after it came due, then fails with
            ``UnknownTaskError``.

    The Server owns its broker and results store: ``close()`` (or leaving ``async with``)
    closes them.
    """

    def __init__(
        self,
        broker: str | Broker = "memory://",
        results: str | Results | None = None,
        *,
        logger: logging.Logger | None = None,
        plugins: Iterable[object] = (),
        load_entrypoints: bool = True,
        middleware: Iterable[Middleware] = (),
        backoff: Backoff | None = None,
        shutdown_timeout: float = 30.0,
        max_stalls: int = 3,
        fetch_timeout: float = 5.0,
        unknown_task_timeout: float = 60.0,
    ) -> None:
        # Checked before anything is built, so that a wrong option fails at the line that gave it.
        options = Options(
            backoff=Backoff() if backoff is None else backoff,
            shutdown_timeout=shutdown_timeout,
            max_stalls=max_stalls,
            fetch_timeout=fetch_timeout,
            unknown_task_timeout=unknown_task_timeout,
        )
        given: tuple[object, ...] = tuple(middleware)  # checked at run time: callers are not always type-checked
        for mw in given:
            if not isinstance(mw, Middleware):
                msg = f"middleware must be tasqueue.Middleware instances, got {type(mw).__name__}"
                raise TypeError(msg)
        self._worker_log = logger or logging.getLogger("tasqueue.worker")
        self.log = logger or logging.getLogger("tasqueue.server")
        self._plugins = PluginHost(plugins, load_entrypoints=load_entrypoints)
        self.broker, self.results = self._plugins.backends(broker, results)
        self.backoff = options.backoff
        self.shutdown_timeout = float(options.shutdown_timeout)
        self.max_stalls = options.max_stalls
        self.fetch_timeout = float(options.fetch_timeout)
        self.unknown_task_timeout = float(options.unknown_task_timeout)
        self.tasks: dict[str, RegisteredTask] = {}
        self.queues: dict[str, QueueConfig] = {}
        self._worker: Worker | None = None
        #: Registers a task and returns its ``TaskHandle``: ``@srv.task``, ``@srv.task("add", queue="q1")``.
        self.task = TaskDecorator(self)
        #: Schedules declared with ``schedule()``, by name; a starting worker makes the store match them.
        self.declared_schedules: dict[str, tuple[Job, str]] = {}
        #: Where the Server reads the time (``tasqueue.testing`` swaps in a clock it controls).
        self.clock: Clock = SystemClock()
        self._sync: BlockingServer | None = None
        self._publisher = Publisher(self)
        # Last, so that plugins registering middleware see a fully built Server.
        self.middleware: tuple[Middleware, ...] = (*middleware, *self._plugins.middleware(self))
        self._enqueue_messages = compose_enqueue(self.middleware, self._publisher.store_and_publish)

    # ---- tasks ---------------------------------------------------------------------------

    def register_task(self, name: str, handler: Handler, opts: TaskOpts | None = None) -> None:
        """Register ``handler`` for jobs whose task is ``name``.

        Raises ``ValueError`` if ``name`` is taken, or if ``opts.concurrency`` differs from an
        explicit concurrency that another task already set on the same queue.
        """
        opts = opts or TaskOpts()
        if not name:
            msg = "a task name must be a non-empty string"
            raise ValueError(msg)
        candidate: object = handler  # checked at run time: callers are not always type-checked
        if not callable(candidate):
            msg = f"the handler of task {name!r} must be callable, got {type(candidate).__name__}"
            raise TypeError(msg)
        if name in self.tasks:
            msg = f"task {name!r} is already registered"
            raise ValueError(msg)
        if self._worker is not None:
            msg = f"cannot register task {name!r} while the worker runs; register every task before start()"
            raise RuntimeError(msg)
        current = self.queues.get(opts.queue)
        if opts.concurrency is not None:
            if current is not None and current.explicit and current.concurrency != opts.concurrency:
                msg = (
                    f"queue {opts.queue!r} already has concurrency {current.concurrency}; task {name!r} "
                    f"asks for {opts.concurrency}. Tasks on one queue share its concurrency: give the "
                    "same value, leave it out, or use another queue"
                )
                raise ValueError(msg)
            self.queues[opts.queue] = QueueConfig(opts.concurrency, explicit=True)
        elif current is None:
            self.queues[opts.queue] = QueueConfig(os.cpu_count() or 1, explicit=False)
        self.tasks[name] = RegisteredTask(name, handler, opts, is_async_callable(handler))

    def get_tasks(self) -> list[str]:
        """Names of the registered tasks."""
        return list(self.tasks)

    # ---- enqueue -------------------------------------------------------------------------

    async def enqueue(self, job: Job) -> str:
        """Store ``job`` as ``queued`` and publish it; return its id.

        A job with ``opts.schedule`` starts a recurring schedule: the returned id is the first
        run's and the one ``cancel_schedule`` takes. Without ``opts.id`` that id is derived from
        the task, queue, cron expression and payload, so that starting the same schedule again
        (at every start of an app) does nothing. An id that is already stored is left as it is
        (ids are idempotency keys).
        """
        if job.opts.schedule:
            return await _recurring.start(self, job)
        return (await self._enqueue_messages([self._publisher.message(job)]))[0]

    async def enqueue_many(self, jobs: Sequence[Job]) -> list[str]:
        """Enqueue several jobs with as few round trips as the backends allow; return their ids."""
        if any(job.opts.schedule for job in jobs):
            return [await self.enqueue(job) for job in jobs]
        return await self._enqueue_messages([self._publisher.message(job) for job in jobs])

    async def enqueue_group(self, group: Group) -> str:
        """Enqueue every job of ``group``; return the group id for ``get_group``."""
        group_id = group.opts.id or new_id()
        messages = [self._publisher.message(job, group_id=group_id) for job in group.jobs]
        doc = GroupMessage(id=group_id, job_status={m.id: JobStatus.QUEUED for m in messages})
        await self.results.set(group_key(group_id), encode(doc))
        await self._undo_on_error(self._enqueue_messages(messages), group_key(group_id))
        return group_id

    async def enqueue_chain(self, chain: Chain) -> str:
        """Enqueue the first job of ``chain``, each next one to follow on success; return the chain id."""
        chain_id = chain.opts.id or new_id()
        linked: Job | None = None
        for job in reversed(chain.jobs):
            # The chain's next job is always the first follow-up, which is how get_chain walks it.
            linked = job if linked is None else msgspec.structs.replace(job, on_success=(linked, *job.on_success))
        assert linked is not None  # Chain guarantees at least two jobs
        first = self._publisher.message(linked, chain_id=chain_id)
        await self.results.set(chain_key(chain_id), encode(ChainMessage(id=chain_id, job_id=first.id)))
        await self._undo_on_error(self._enqueue_messages([first]), chain_key(chain_id))
        return chain_id

    async def _undo_on_error(self, enqueue: Awaitable[object], key: str) -> None:
        """Await ``enqueue``; if it fails before publishing anything, delete the group/chain document written for it."""
        try:
            await enqueue
        except BaseException as exc:
            if not (isinstance(exc, EnqueueError) and (exc.enqueued or exc.unknown)):
                await asyncio.shield(self.results.delete([key]))
            raise

    def schedule(self, name: str, job: Job, cron: str) -> None:
        """Declare a schedule: ``job`` runs on ``cron`` (5 fields, UTC), once per tick however many
        processes declare it.

        Declarations take effect when a worker starts: it starts declared schedules that do not
        run yet, replaces those whose definition changed, and removes those of its tasks that are
        no longer declared. ``Inspector.schedules()`` (``tasqueue schedules``) lists them.
        """
        _recurring.definition(name, job, cron)  # validates the cron expression now
        self.declared_schedules[name] = (job, cron)

    async def cancel_schedule(self, schedule_id: str) -> None:
        """Stop a recurring job: runs not started yet are dropped when they come due."""
        key = schedule_key(schedule_id)
        found = await self.results.get_many([key])
        if found[0] is None:
            msg = f"no active schedule {schedule_id!r} (never created, or already cancelled)"
            raise NotFoundError(msg)
        await self.results.delete([key])

    # ---- queries -------------------------------------------------------------------------

    async def get_job(self, job_id: str) -> JobMessage:
        """The stored message of a job: status, retries, last error, and the job itself."""
        try:
            return decode_job(await self.results.get(job_key(job_id)))
        except NotFoundError:
            msg = f"job {job_id!r} not found (never enqueued, expired, or deleted)"
            raise NotFoundError(msg) from None

    async def get_result(self, job_id: str) -> bytes:
        """The result a job saved (returned bytes, or ``ctx.save``); ``NotFoundError`` if none."""
        try:
            return await self.results.get(result_key(job_id))
        except NotFoundError:
            msg = f"no result for job {job_id!r} (not finished, saved nothing, expired, or deleted)"
            raise NotFoundError(msg) from None

    async def delete_job(self, job_id: str) -> None:
        """Delete a job's message, result and success/failed entries (a queued run still runs)."""
        await self.results.delete([job_key(job_id), result_key(job_id)], ids=[job_id])

    async def get_pending(self, queue: str = DEFAULT_QUEUE) -> list[JobMessage]:
        """Jobs of ``queue`` waiting for a worker (ready or delayed), oldest first."""
        pending: list[JobMessage] = []
        for raw in await self.broker.get_pending(queue):
            try:
                pending.append(decode_job(raw))
            except DecodeErrors:
                self.log.warning("an undecodable message is pending on queue %r; a worker will park it as failed", queue)
        return pending

    async def get_success(self) -> list[str]:
        """Ids of successful jobs, oldest first."""
        return await self.results.get_success()

    async def get_failed(self) -> list[str]:
        """Ids of failed jobs, oldest first."""
        return await self.results.get_failed()

    async def wait(self, job_id: str, *, timeout: float | None = None, poll: float = 0.05) -> JobMessage:
        """Wait until a job is ``successful`` or ``failed`` and return its message.

        Sleeps until the results store says the job finished where it can notify, else reads
        the status every ``poll`` seconds. Raises ``TimeoutError`` after ``timeout`` seconds and
        ``NotFoundError`` for an id the store does not hold (there would be nothing to wait for).
        """
        return await _waiting.wait(self, job_id, timeout=timeout, poll=poll)

    @overload
    async def result(self, job_id: str, *, type: type[T], timeout: float | None = None) -> T: ...
    @overload
    async def result(self, job_id: str, *, type: None = None, timeout: float | None = None) -> Any: ...
    async def result(self, job_id: str, *, type: Any = None, timeout: float | None = None) -> Any:
        """Wait for a job to finish and return its result.

        The result is decoded as ``type`` when given, else as the result type of the job's task
        when this Server registered it as a typed task, else returned as bytes; ``None`` when the
        job saved nothing. Raises ``JobFailedError`` (job id, error type and message, the
        worker's traceback) if the job failed, ``TimeoutError`` after ``timeout`` seconds, and
        ``NotFoundError`` for an id the store does not hold.
        """
        decode: Callable[[bytes], Any] | None = None if type is None else Codec(type).decode
        return await _waiting.result(self, job_id, decode, timeout=timeout)

    async def get_group(self, group_id: str) -> GroupMessage:
        """A group's status, recomputed from its jobs: failed if one failed, successful if all did.

        A failed group's other jobs go on, and their statuses keep moving here until every job
        has finished; only then is the stored document final.
        """
        doc = await self._load(group_key(group_id), decode_group, "group", group_id)
        open_ids = [i for i, s in doc.job_status.items() if s not in _TERMINAL]
        statuses = dict(doc.job_status)
        for job_id, raw in zip(open_ids, await self.results.get_many([job_key(i) for i in open_ids]), strict=True):
            if raw is not None:
                statuses[job_id] = _status_of(raw)
        values = statuses.values()
        if any(s is JobStatus.FAILED for s in values):
            status = JobStatus.FAILED
        elif all(s is JobStatus.SUCCESSFUL for s in values):
            status = JobStatus.SUCCESSFUL
        else:
            status = JobStatus.PROCESSING
        updated = GroupMessage(id=doc.id, status=status, job_status=statuses)
        if open_ids and updated != doc:
            await self.results.set(group_key(group_id), encode(updated))
        return updated

    async def get_chain(self, chain_id: str) -> ChainMessage:
        """A chain's status, found by walking from its current job along the finished ones."""
        doc = await self._load(chain_key(chain_id), decode_chain, "chain", chain_id)
        if doc.status in _TERMINAL:
            return doc
        job_id, prev, status = doc.job_id, list(doc.prev_jobs), doc.status
        while True:
            try:
                message = decode_job(await self.results.get(job_key(job_id)))
            except NotFoundError:
                break
            if message.status is JobStatus.SUCCESSFUL:
                prev.append(job_id)
                if message.on_success_ids:
                    job_id, status = message.on_success_ids[0], JobStatus.PROCESSING
                    continue
                status = JobStatus.SUCCESSFUL
            elif message.status is JobStatus.FAILED:
                status = JobStatus.FAILED
            elif prev or message.status is not JobStatus.QUEUED:
                status = JobStatus.PROCESSING
            break
        updated = ChainMessage(id=doc.id, status=status, job_id=job_id, prev_jobs=prev)
        if updated != doc:
            await self.results.set(chain_key(chain_id), encode(updated))
        return updated

    async def _load(self, key: str, decode: Callable[[bytes], T], kind: str, id_: str) -> T:
        try:
            return decode(await self.results.get(key))
        except NotFoundError:
            msg = f"{kind} {id_!r} not found (never enqueued, expired, or deleted)"
            raise NotFoundError(msg) from None

    # ---- running -------------------------------------------------------------------------

    async def start(self, *, handle_signals: bool = True) -> None:
        """Run the worker until ``stop()``, cancellation, or SIGINT/SIGTERM; then shut down gracefully.

        A graceful shutdown stops fetching, lets running jobs finish within
        ``shutdown_timeout`` and hands the rest back to the broker without counting a retry.
        A second signal skips the wait.
        """
        if not self.tasks:
            msg = "no tasks are registered: register handlers with register_task() or @srv.task before start()"
            raise ConfigurationError(msg)
        if self._worker is not None:
            msg = "this Server's worker is already running"
            raise RuntimeError(msg)
        syncing = await _recurring.start_sync(self)
        options = Options(
            backoff=self.backoff,
            shutdown_timeout=self.shutdown_timeout,
            max_stalls=self.max_stalls,
            fetch_timeout=self.fetch_timeout,
            unknown_task_timeout=self.unknown_task_timeout,
        )
        worker = self._worker = Worker(
            broker=self.broker,
            results=self.results,
            tasks=self.tasks,
            queues=self.queues,
            middleware=self.middleware,
            publisher=self._publisher,
            enqueue=self._enqueue_messages,
            options=options,
            clock=self.clock,
            log=self._worker_log,
        )
        installed = self._install_signals(worker) if handle_signals else []
        try:
            await worker.run()
        finally:
            if syncing is not None:
                syncing.cancel()
            loop = asyncio.get_running_loop()
            for sig in installed:
                loop.remove_signal_handler(sig)
            self._worker = None

    async def stop(self) -> None:
        """Ask the running worker to shut down gracefully and wait until it has.

        Does nothing when no worker runs, including one whose ``start()`` task has been created
        but has not begun yet: wait for ``running_loop`` before stopping such a worker.
        """
        worker = self._worker
        if worker is not None:
            await worker.stop()

    async def close(self) -> None:
        """Stop the worker if it runs, then close the broker and the results store."""
        await self.stop()
        try:
            await self.broker.close()
        finally:
            await self.results.close()

    def run(self, *, loop: Loop = "auto") -> None:
        """Run the worker from synchronous code until SIGINT/SIGTERM (a ``main()`` entry point).

        ``loop="auto"`` runs it on uvloop when that is installed (``pip install
        'tasqueue-core[uvloop]'``: less CPU per job), else on asyncio's loop; ``"asyncio"`` and
        ``"uvloop"`` choose one.
        """

        async def main() -> None:
            async with self:
                await self.start()

        _loop.run(main(), loop)

    @property
    def sync(self) -> BlockingServer:
        """This server's blocking twin, for synchronous code: ``srv.sync.enqueue(job)``."""
        if self._sync is None:
            from tasqueue.sync import BlockingServer

            self._sync = BlockingServer(self)
        return self._sync

    @property
    def running_loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop the worker runs on, while it runs."""
        return None if self._worker is None else self._worker.loop

    def _install_signals(self, worker: Worker) -> list[signal.Signals]:
        loop = asyncio.get_running_loop()
        installed: list[signal.Signals] = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, worker.signal, sig)
            except (NotImplementedError, RuntimeError, ValueError):
                # Not the main thread, or a platform without signal support: stop() still works.
                break
            installed.append(sig)
        return installed

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"Server(broker={type(self.broker).__name__}, results={type(self.results).__name__}, tasks={self.get_tasks()})"


class _StatusOnly(msgspec.Struct):
    status: JobStatus = JobStatus.QUEUED


_status_decoder = msgspec.msgpack.Decoder(_StatusOnly)


def _status_of(raw: bytes) -> JobStatus:
    """The status in a stored job message, without decoding the rest."""
    return _status_decoder.decode(raw).status
