"""Task handles: what ``@srv.task`` returns, to enqueue a task by its function and await its result.

A handle knows its task's name, queue, options and payload/result types, so call sites need
neither the name nor the queue::

    @srv.task(queue="math", max_retries=3)
    async def add(args: AddArgs) -> int:
        return args.a + args.b

    job_id = await add.enqueue(AddArgs(a=1, b=2))
    assert await add.result(job_id, timeout=10) == 3

It is a layer over the bytes API: ``add.job(...)`` is a plain ``Job`` (for groups, chains,
``enqueue_many``), and a producer that does not import the worker's code enqueues the same job
by name with ``Job("add", msgspec.msgpack.encode(AddArgs(a=1, b=2)))``, or builds a handle
without a function: ``TaskHandle(srv, "add", payload=AddArgs, result=int, queue="math")``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from tasqueue import _waiting
from tasqueue._schedule import validate as validate_cron
from tasqueue._typed import RAW, Codec, Shape, shape_of, wrap
from tasqueue.jobs import DEFAULT_QUEUE, Backoff, Job, JobOpts
from tasqueue.tasks import Callback, ErrorCallback, JobCtx, TaskOpts

if TYPE_CHECKING:
    from tasqueue.server import Server

__all__ = ["TaskDecorator", "TaskHandle"]

P = TypeVar("P")
R = TypeVar("R")


class TaskHandle(Generic[P, R]):
    """A registered task: call it like its function, enqueue it, await its result.

    ``P`` is the payload type its handler takes, ``R`` the type of the result it returns.

    Args:
        server: The Server that enqueues the task's jobs and reads their results.
        name: The task name.
        payload: The payload type (``bytes`` for the bytes layer).
        result: The result type.
        opts: The task's options: its queue and the defaults of its jobs.
        fn: The handler function, when this process has it.
    """

    __slots__ = ("_job_opts", "_payload", "_result", "fn", "name", "opts", "server")

    def __init__(
        self,
        server: Server,
        name: str,
        *,
        payload: type[P] = bytes,  # type: ignore[assignment]  # the default only fits P = bytes
        result: type[R] = bytes,  # type: ignore[assignment]  # likewise
        queue: str = DEFAULT_QUEUE,
        opts: TaskOpts | None = None,
        fn: Callable[..., Any] | None = None,
    ) -> None:
        self.server = server
        self.name = name
        self.opts = opts or TaskOpts(queue=queue)
        self.fn = fn
        self._payload: Codec[P] = Codec(payload)
        self._result: Codec[R] = Codec(result)
        # Options are frozen: jobs that set none share one instance (most jobs; it saves a build each).
        self._job_opts = JobOpts(queue=self.opts.queue)

    @property
    def queue(self) -> str:
        """The queue the task's jobs go to unless a job says otherwise."""
        return self.opts.queue

    @property
    def payload_type(self) -> Any:
        return self._payload.type

    @property
    def result_type(self) -> Any:
        return self._result.type

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the handler function directly, as if it had not been decorated."""
        if self.fn is None:
            msg = f"task {self.name!r} has no function in this process (a handle built by name)"
            raise TypeError(msg)
        return self.fn(*args, **kwargs)

    def job(
        self,
        payload: P,
        *,
        id: str | None = None,
        eta: datetime | None = None,
        queue: str | None = None,
        max_retries: int | None = None,
        timeout: float | timedelta | None = None,
        backoff: Backoff | None = None,
        on_success: Sequence[Job] = (),
        on_error: Sequence[Job] = (),
    ) -> Job:
        """A ``Job`` of this task for ``payload``, validated and encoded, on the task's queue.

        Options not given take the task's defaults when the job runs. Raises
        ``PayloadError`` (with msgspec's reason) if ``payload`` does not fit the task's type.
        """
        data = self._payload.check(payload, self.name)
        if id is None and eta is None and queue is None and max_retries is None and timeout is None and backoff is None:
            opts = self._job_opts
        else:
            opts = JobOpts(
                id=id,
                eta=eta,
                queue=queue or self.opts.queue,
                max_retries=max_retries,
                timeout=timeout,
                backoff=backoff,
            )
        return Job(self.name, data, opts, on_success=tuple(on_success), on_error=tuple(on_error))

    async def enqueue(
        self,
        payload: P,
        *,
        id: str | None = None,
        eta: datetime | None = None,
        queue: str | None = None,
        max_retries: int | None = None,
        timeout: float | timedelta | None = None,
        backoff: Backoff | None = None,
        on_success: Sequence[Job] = (),
        on_error: Sequence[Job] = (),
    ) -> str:
        """Enqueue a job of this task; return its id (see ``job`` for the options)."""
        job = self.job(
            payload,
            id=id,
            eta=eta,
            queue=queue,
            max_retries=max_retries,
            timeout=timeout,
            backoff=backoff,
            on_success=on_success,
            on_error=on_error,
        )
        return await self.server.enqueue(job)

    async def result(self, job_id: str, *, timeout: float | None = None) -> R:
        """Wait for job ``job_id`` to finish and return its result, decoded as ``R``.

        Raises ``JobFailedError`` if the job failed, ``TimeoutError`` after ``timeout`` seconds,
        ``NotFoundError`` for an id that is not stored. A job that saved nothing gives ``None``.
        """
        value: R = await _waiting.result(self.server, job_id, self._result.decode, timeout=timeout)
        return value

    def decode_result(self, data: bytes) -> R:
        """A stored result of this task, decoded."""
        return self._result.decode(data)

    def __repr__(self) -> str:
        return f"TaskHandle({self.name!r}, queue={self.opts.queue!r}, payload={self._payload!r}, result={self._result!r})"


class TaskDecorator:
    """``srv.task``: ``@srv.task``, ``@srv.task("name")`` or ``@srv.task(queue=..., max_retries=...)``."""

    __slots__ = ("_server", "handles")

    def __init__(self, server: Server) -> None:
        self._server = server
        #: The handles of the tasks registered through this decorator, by task name.
        self.handles: dict[str, TaskHandle[Any, Any]] = {}

    # Coroutine functions first: an async handler also matches the plain-callable signatures.
    @overload
    def __call__(self, fn: Callable[[P, JobCtx], Coroutine[Any, Any, R]], /) -> TaskHandle[P, R]: ...
    @overload
    def __call__(self, fn: Callable[[P], Coroutine[Any, Any, R]], /) -> TaskHandle[P, R]: ...
    @overload
    def __call__(self, fn: Callable[[P, JobCtx], R], /) -> TaskHandle[P, R]: ...
    @overload
    def __call__(self, fn: Callable[[P], R], /) -> TaskHandle[P, R]: ...
    @overload
    def __call__(
        self,
        name: str | None = None,
        /,
        *,
        queue: str | None = None,
        concurrency: int | None = None,
        max_retries: int | None = None,
        timeout: float | timedelta | None = None,
        backoff: Backoff | None = None,
        schedule: str = "",
        success_cb: Callback | None = None,
        processing_cb: Callback | None = None,
        retrying_cb: ErrorCallback | None = None,
        failed_cb: ErrorCallback | None = None,
    ) -> _Register: ...
    def __call__(self, name: Any = None, /, **options: Any) -> Any:
        if callable(name):
            return register(self._server, name, None, options)
        return _Register(self._server, name, options)


class _Register:
    """The decorator ``srv.task(...)`` returns when called with options."""

    __slots__ = ("_name", "_options", "_server")

    def __init__(self, server: Server, name: str | None, options: dict[str, Any]) -> None:
        self._server = server
        self._name = name
        self._options = options

    @overload
    def __call__(self, fn: Callable[[P, JobCtx], Coroutine[Any, Any, R]], /) -> TaskHandle[P, R]: ...
    @overload
    def __call__(self, fn: Callable[[P], Coroutine[Any, Any, R]], /) -> TaskHandle[P, R]: ...
    @overload
    def __call__(self, fn: Callable[[P, JobCtx], R], /) -> TaskHandle[P, R]: ...
    @overload
    def __call__(self, fn: Callable[[P], R], /) -> TaskHandle[P, R]: ...
    def __call__(self, fn: Callable[..., Any], /) -> TaskHandle[Any, Any]:
        return register(self._server, fn, self._name, self._options)


def register(server: Server, fn: Callable[..., Any], name: str | None, options: dict[str, Any]) -> TaskHandle[Any, Any]:
    """Register ``fn`` on ``server`` under ``name`` (its qualified name by default); return its handle."""
    name = name or f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', repr(fn))}".lstrip(".")
    options = dict(options)
    schedule = options.pop("schedule", "")
    if options.get("queue") is None:
        options.pop("queue", None)
    opts = TaskOpts(**options)
    shape = shape_of(fn, name)
    handle: TaskHandle[Any, Any] = TaskHandle(server, name, payload=shape.payload.type, opts=opts, fn=fn)
    handle._result = shape.result or RAW
    scheduled = handle.job(_empty_payload(shape, name)) if schedule else None
    if schedule:
        validate_cron(schedule)
    server.register_task(name, wrap(fn, shape, name), opts)
    server.task.handles[name] = handle
    if scheduled is not None:
        server.schedule(name, scheduled, schedule)
    return handle


def _empty_payload(shape: Shape, name: str) -> Any:
    """The payload a schedule declared on a task runs with: the payload parameter's default,
    ``b""`` for a bytes task, or the payload type built without arguments."""
    if shape.default is not inspect.Parameter.empty:
        return shape.default
    if shape.payload.raw:
        return b""
    try:
        return shape.payload.type()
    except TypeError:
        msg = (
            f"task {name!r} declares a schedule but its payload ({shape.payload!r}) has no default; give the "
            "payload parameter a default, or declare the schedule with srv.schedule(name, task.job(payload), cron)"
        )
        raise TypeError(msg) from None
