"""Waiting for a job to finish, and reading its outcome: ``Server.wait`` and ``Server.result``.

A store that can notify (``NotifyingResults``) wakes the waiter when the job's id lands on the
success or failed list; the status is read again then, and every ``RECHECK`` seconds as a
safety net (a notification lost with a connection). Other stores are polled.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tasqueue._codec import decode_job
from tasqueue._keys import error_key, job_key, result_key
from tasqueue.errors import JobFailedError, NotFoundError
from tasqueue.messages import JobMessage, JobStatus
from tasqueue.results import FinishWatch, NotifyingResults

if TYPE_CHECKING:
    from tasqueue.server import Server

#: Seconds between status reads while a notifying store is watched.
RECHECK = 5.0
#: After a wake-up that found the job unfinished, read again after these pauses (seconds): some
#: stores (NATS JetStream) deliver the notification a moment before the status is readable.
_SETTLE = (0.005, 0.01, 0.02, 0.04, 0.08, 0.16)

_TERMINAL = frozenset({JobStatus.SUCCESSFUL, JobStatus.FAILED})


async def wait(server: Server, job_id: str, *, timeout: float | None, poll: float) -> JobMessage:
    """Wait until job ``job_id`` is ``successful`` or ``failed``; return its message."""
    if timeout is not None and timeout < 0:
        msg = f"timeout must be >= 0 seconds or None (wait for ever), got {timeout}"
        raise ValueError(msg)
    if poll <= 0:
        msg = f"poll must be > 0 seconds, got {poll}"
        raise ValueError(msg)
    results = server.results
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    watching = results.watch([job_id]) if isinstance(results, NotifyingResults) else contextlib.nullcontext(None)
    async with watching as watch:
        first = True
        settle: list[float] = []
        while True:
            message = await _read(server, job_id, first=first)
            first = False
            if message.status in _TERMINAL:
                return message
            pause = poll if watch is None else (settle.pop(0) if settle else RECHECK)
            if deadline is not None:
                left = deadline - loop.time()
                if left <= 0:
                    msg = f"job {job_id!r} did not finish within {timeout:g}s; it is {message.status}"
                    raise TimeoutError(msg)
                pause = min(pause, left)
            if await _pause(watch, pause) and not settle:
                settle = list(_SETTLE)


async def result(server: Server, job_id: str, decode: Callable[[bytes], Any] | None, *, timeout: float | None) -> Any:
    """Wait for job ``job_id`` and return its result, decoded; raise ``JobFailedError`` if it failed."""
    message = await wait(server, job_id, timeout=timeout, poll=0.05)
    if message.status is JobStatus.FAILED:
        (tb,) = await server.results.get_many([error_key(job_id)])
        error_type, _, error = message.prev_err.partition(": ")
        raise JobFailedError(job_id, error_type, error, "" if tb is None else tb.decode("utf-8", "replace"))
    (data,) = await server.results.get_many([result_key(job_id)])
    if data is None:
        return None
    if decode is None:
        handle = server.task.handles.get(message.job.task)
        if handle is None:
            return data
        decode = handle.decode_result
    return decode(data)


async def _read(server: Server, job_id: str, *, first: bool) -> JobMessage:
    (raw,) = await server.results.get_many([job_key(job_id)])
    if raw is None:
        if first:
            msg = (
                f"job {job_id!r} not found, so there is nothing to wait for: never enqueued (check the id: "
                "enqueue returns it), expired, or deleted"
            )
        else:
            msg = f"job {job_id!r} was deleted (or expired) while it was waited for"
        raise NotFoundError(msg)
    return decode_job(raw)


async def _pause(watch: FinishWatch | None, seconds: float) -> bool:
    """Sleep; True if a notification ended the sleep."""
    if watch is None:
        await asyncio.sleep(seconds)
        return False
    return await watch.wait(seconds)
