"""Middleware: code that wraps every enqueue and every run of a job, as an onion.

Subclass ``Middleware`` and override either method; each calls ``call_next`` to go on inward,
so a span, a timer or a ``try`` block wraps exactly the work it measures::

    class Timing(Middleware):
        async def process(self, ctx: JobCtx, call_next: ProcessNext) -> bytes | None:
            start = time.perf_counter()
            try:
                return await call_next(ctx)
            finally:
                log.info("%s took %.3fs", ctx.meta.job.task, time.perf_counter() - start)

``enqueue`` sees the ``JobMessage`` objects of one enqueue call before they are stored and
published, as a batch (one message for ``Server.enqueue``; several for ``enqueue_many``, a
group, or follow-up jobs), so that batches stay one round trip; add ``headers`` there.
``process`` wraps the handler of one run (its timeout included) and sees what it returns or
raises. Middleware is installed with ``Server(middleware=[...])`` or by a plugin's
``tasqueue_register_middleware`` hook; the first one given is the outermost. A method left
as inherited costs nothing per job.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    from tasqueue.messages import JobMessage
    from tasqueue.tasks import JobCtx

__all__ = ["EnqueueNext", "Middleware", "ProcessNext", "compose_enqueue", "compose_process"]

#: Stores and publishes the messages; returns their job ids, in order.
EnqueueNext: TypeAlias = Callable[[Sequence["JobMessage"]], Awaitable[list[str]]]
#: Runs the handler (with its timeout); returns the bytes it returned, or None.
ProcessNext: TypeAlias = Callable[["JobCtx"], Awaitable[bytes | None]]


class Middleware:
    """Base class of middleware; both methods pass straight through."""

    async def enqueue(self, messages: Sequence[JobMessage], call_next: EnqueueNext) -> list[str]:
        """Wrap storing and publishing the messages of one enqueue call."""
        return await call_next(messages)

    async def process(self, ctx: JobCtx, call_next: ProcessNext) -> bytes | None:
        """Wrap one run of a job's handler."""
        return await call_next(ctx)


def _overrides(mw: Middleware, name: str) -> bool:
    return getattr(type(mw), name) is not getattr(Middleware, name)


def compose_enqueue(middleware: Sequence[Middleware], inner: EnqueueNext) -> EnqueueNext:
    """Wrap ``inner`` in the ``enqueue`` methods of ``middleware``, the first outermost."""
    call = inner
    for mw in reversed(middleware):
        if _overrides(mw, "enqueue"):
            call = partial(mw.enqueue, call_next=call)
    return call


def compose_process(middleware: Sequence[Middleware], inner: ProcessNext) -> ProcessNext:
    """Wrap ``inner`` in the ``process`` methods of ``middleware``, the first outermost."""
    call = inner
    for mw in reversed(middleware):
        if _overrides(mw, "process"):
            call = partial(mw.process, call_next=call)
    return call
