"""tasqueue: a simple, lightweight, distributed job/worker library, async-first.

from tasqueue import Server, Job

srv = Server()                       # memory:// broker and results; or "redis://…" with tasqueue-redis

@srv.task("add")
async def add(payload: bytes, ctx: JobCtx) -> bytes:
    a, b = map(int, payload.split())
    return str(a + b).encode()

job_id = await srv.enqueue(Job("add", b"1 2"))
await srv.start()                    # run the worker until stopped
"""

from __future__ import annotations

from typing import Any

from tasqueue.broker import Broker, Delivery, Envelope
from tasqueue.control import JobState
from tasqueue.errors import (
    BrokerError,
    ConfigurationError,
    ConfigurationWarning,
    EnqueueError,
    JobCancelledError,
    JobError,
    JobFailedError,
    JobTimeoutError,
    NotFoundError,
    PayloadError,
    PluginConflictError,
    ResultsError,
    TasqueueError,
    UnknownSchemeError,
    UnknownTaskError,
)
from tasqueue.handles import TaskHandle
from tasqueue.hookspecs import hookimpl
from tasqueue.inspector import Inspector, JobFilter
from tasqueue.jobs import DEFAULT_QUEUE, Backoff, Chain, ChainOpts, Group, GroupOpts, Job, JobOpts
from tasqueue.messages import ChainMessage, ChainMeta, GroupMessage, GroupMeta, JobMessage, JobStatus, Meta
from tasqueue.middleware import EnqueueNext, Middleware, ProcessNext
from tasqueue.results import FinishWatch, NotifyingResults, Results, Write
from tasqueue.server import Server
from tasqueue.sync import BlockingServer
from tasqueue.tasks import Handler, JobCtx, TaskOpts

__all__ = [
    "DEFAULT_QUEUE",
    "Backoff",
    "BlockingServer",
    "Broker",
    "BrokerError",
    "Chain",
    "ChainMessage",
    "ChainMeta",
    "ChainOpts",
    "ConfigurationError",
    "ConfigurationWarning",
    "Delivery",
    "EnqueueError",
    "EnqueueNext",
    "Envelope",
    "FinishWatch",
    "Group",
    "GroupMessage",
    "GroupMeta",
    "GroupOpts",
    "Handler",
    "Inspector",
    "Job",
    "JobCancelledError",
    "JobCtx",
    "JobError",
    "JobFailedError",
    "JobFilter",
    "JobMessage",
    "JobOpts",
    "JobState",
    "JobStatus",
    "JobTimeoutError",
    "Meta",
    "Middleware",
    "NotFoundError",
    "NotifyingResults",
    "PayloadError",
    "PluginConflictError",
    "ProcessNext",
    "Results",
    "ResultsError",
    "Server",
    "TaskHandle",
    "TaskOpts",
    "TasqueueError",
    "UnknownSchemeError",
    "UnknownTaskError",
    "Write",
    "hookimpl",
]


def __getattr__(name: str) -> Any:
    # Computed lazily: importlib.metadata is slow to import and most programs never ask.
    if name == "__version__":
        from importlib.metadata import version

        return version("tasqueue-core")
    msg = f"module 'tasqueue' has no attribute {name!r}"
    raise AttributeError(msg)
