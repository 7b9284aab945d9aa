"""What a worker runs: handler types, per-task options (``TaskOpts``) and the handler's ``JobCtx``."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeAlias

from tasqueue.errors import JobCancelledError
from tasqueue.jobs import DEFAULT_QUEUE, Backoff, seconds

if TYPE_CHECKING:
    from tasqueue.messages import JobMessage
    from tasqueue.results import Results

__all__ = [
    "AsyncHandler",
    "Callback",
    "ErrorCallback",
    "Handler",
    "JobCtx",
    "QueueConfig",
    "RegisteredTask",
    "RunState",
    "SyncHandler",
    "TaskOpts",
]

AsyncHandler: TypeAlias = Callable[[bytes, "JobCtx"], Awaitable[bytes | None]]
SyncHandler: TypeAlias = Callable[[bytes, "JobCtx"], bytes | None]
#: ``handler(payload, ctx)``: return bytes (or ``await ctx.save(b)``) to save a result, raise to fail.
Handler: TypeAlias = AsyncHandler | SyncHandler
#: ``cb(ctx)``, sync or async.
Callback: TypeAlias = Callable[["JobCtx"], Awaitable[None] | None]
#: ``cb(ctx, exc)``, sync or async.
ErrorCallback: TypeAlias = Callable[["JobCtx", BaseException], Awaitable[None] | None]


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskOpts:
    """Options of a registered task.

    Attributes:
        concurrency: How many jobs of this task's queue a worker runs at once; all tasks of one
            queue share it. ``None`` takes the queue's existing setting, or ``os.cpu_count()``.
        queue: The queue the task's jobs are consumed from.
        backoff: Delay between retries for this task's jobs (a job's own ``JobOpts.backoff``
            wins); the server's default when ``None``.
        max_retries: Retries of this task's jobs when a job does not set ``JobOpts.max_retries``.
        timeout: Seconds (or a ``timedelta``) a run of this task may take when a job does not
            set ``JobOpts.timeout``.
        success_cb: Called after the handler succeeded, before ``on_success`` jobs are enqueued.
        processing_cb: Called when a run starts, before the handler.
        retrying_cb: Called with the exception when a failed run will be retried.
        failed_cb: Called with the exception when the job failed for good.

    Callbacks may be plain functions (they run on the event loop, so keep them quick) or
    coroutine functions. An exception in a callback is logged and does not change the outcome.
    """

    concurrency: int | None = None
    queue: str = DEFAULT_QUEUE
    backoff: Backoff | None = None
    max_retries: int | None = None
    timeout: float | timedelta | None = None
    success_cb: Callback | None = None
    processing_cb: Callback | None = None
    retrying_cb: ErrorCallback | None = None
    failed_cb: ErrorCallback | None = None

    def __post_init__(self) -> None:
        concurrency = self.concurrency
        if concurrency is not None and (isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1):
            msg = f"TaskOpts.concurrency must be an int >= 1, got {self.concurrency!r}"
            raise ValueError(msg)
        if not self.queue or not isinstance(self.queue, str):
            msg = f"TaskOpts.queue must be a non-empty string, got {self.queue!r}"
            raise ValueError(msg)
        for name in ("success_cb", "processing_cb", "retrying_cb", "failed_cb"):
            fn = getattr(self, name)
            if fn is not None and not callable(fn):
                msg = f"TaskOpts.{name} must be callable (sync or async), got {type(fn).__name__}"
                raise TypeError(msg)
        if self.max_retries is not None and (not isinstance(self.max_retries, int) or self.max_retries < 0):
            msg = f"TaskOpts.max_retries must be an int >= 0, got {self.max_retries!r}"
            raise ValueError(msg)
        object.__setattr__(self, "timeout", seconds(self.timeout, "TaskOpts.timeout"))  # frozen: normalise once


def is_async_callable(fn: object) -> bool:
    """Whether calling ``fn`` returns a coroutine (functions, partials, objects with async ``__call__``)."""
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None))  # noqa: B004 - we need the method, not callable()


@dataclass(frozen=True, slots=True)
class RegisteredTask:
    """A handler registered under a task name, with its options."""

    name: str
    handler: Handler
    opts: TaskOpts
    is_async: bool


@dataclass(slots=True)
class QueueConfig:
    """How many jobs of one queue a worker runs at once; ``explicit`` if a task asked for it."""

    concurrency: int
    explicit: bool


class RunState:
    """The engine's side of one run, which a ``JobCtx`` reads: cancelled yet, result so far.

    A plain object with plain attributes: the worker sets them on the event loop and a sync
    handler's thread reads them (one attribute store is atomic).
    """

    __slots__ = ("cancelled", "loop", "saved")

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.cancelled = False
        self.saved: bytes | None = None
        self.loop = loop


class JobCtx:
    """What a handler gets besides its payload: the job's ``meta``, saving results, cancellation.

    ``ctx.meta`` is the job's ``JobMessage`` (a ``Meta``) as of this run. ``await ctx.save(b)``
    stores ``b`` as the job's result right away (handlers may also just return bytes).
    ``ctx.cancelled`` turns true when the run is cancelled (timeout, shutdown, lost lease),
    before the handler sees it: async handlers get ``asyncio.CancelledError``; sync handlers,
    which run in a thread and cannot be interrupted, should poll it in long loops. A cancelled
    run saves nothing more: ``save`` then raises ``JobCancelledError``.
    """

    __slots__ = ("_result_key", "_results", "_state", "meta")

    def __init__(self, meta: JobMessage, results: Results, result_key: str, state: RunState | None = None) -> None:
        self.meta = meta
        self._results = results
        self._result_key = result_key
        self._state = state or RunState()

    @property
    def cancelled(self) -> bool:
        """True once this run has been cancelled (timeout, shutdown, or its lease was lost)."""
        return self._state.cancelled

    @property
    def saved(self) -> bytes | None:
        """This run's result so far: the last bytes given to ``save``, or, once the handler has
        returned bytes (in ``success_cb``), those."""
        return self._state.saved

    async def save(self, result: bytes) -> None:
        """Store ``result`` as this job's result now; the next chain job sees the last one saved."""
        value: object = result  # checked at run time: handlers are not always type-checked
        if not isinstance(value, bytes):
            msg = f"ctx.save takes bytes, got {type(value).__name__}"
            raise TypeError(msg)
        self._refuse_if_cancelled()
        await self._results.set(self._result_key, result)
        self._refuse_if_cancelled()  # cancelled while the write travelled: not this run's result
        self._state.saved = result

    def save_sync(self, result: bytes) -> None:
        """``save`` for sync handlers, which run in a worker thread; blocks until stored."""
        loop = self._state.loop
        if loop is None:
            msg = "ctx.save_sync is for sync handlers running in a worker thread; use `await ctx.save(...)`"
            raise RuntimeError(msg)
        self._refuse_if_cancelled()
        asyncio.run_coroutine_threadsafe(self.save(result), loop).result()

    def _refuse_if_cancelled(self) -> None:
        if self._state.cancelled:
            msg = f"job {self.meta.id} was cancelled (timeout, shutdown or a lost lease); a cancelled run saves no result"
            raise JobCancelledError(msg)

    def __repr__(self) -> str:
        return f"JobCtx(id={self.meta.id!r}, task={self.meta.job.task!r}, status={self.meta.status!s})"


async def call_maybe_async(fn: Callable[..., Any], *args: Any) -> None:
    """Call a sync or async callback and wait for it."""
    result = fn(*args)
    if inspect.isawaitable(result):
        await result
