"""What users describe as work: ``Job`` and its options, ``Group``, ``Chain`` and retry ``Backoff``.

``Job``, ``JobOpts`` and ``Backoff`` travel inside every ``JobMessage``, so they are msgspec
Structs and follow the wire rules: new fields get defaults and go at the end, nothing is renamed
or retyped. Validation happens where the user builds them, so a mistake raises at the line
that made it rather than in a worker later; only a cron ``schedule`` is checked by
``Server.enqueue``, which computes its first fire time anyway.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from datetime import datetime, timedelta

import msgspec

__all__ = [
    "DEFAULT_QUEUE",
    "Backoff",
    "Chain",
    "ChainOpts",
    "Group",
    "GroupOpts",
    "Job",
    "JobOpts",
]

#: The queue a job goes to, and a task is consumed from, when none is given.
DEFAULT_QUEUE = "tasqueue:tasks"


class Backoff(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """How long to wait before retrying a failed job.

    The n-th retry (n = 0, 1, ...) waits ``min(max, initial * factor**n)`` seconds; with
    ``jitter`` the wait is drawn uniformly from the upper half of that, so that jobs which
    failed together do not all come back at the same instant.
    """

    initial: float = 1.0
    factor: float = 2.0
    max: float = 300.0
    jitter: bool = True

    def __post_init__(self) -> None:
        if not (math.isfinite(self.initial) and self.initial >= 0 and self.max >= 0):  # max may be inf: no cap
            msg = f"Backoff delays must be >= 0 seconds (initial finite), got initial={self.initial}, max={self.max}"
            raise ValueError(msg)
        if not (math.isfinite(self.factor) and self.factor >= 1):
            msg = f"Backoff factor must be >= 1 (1 keeps the delay constant), got {self.factor}"
            raise ValueError(msg)

    def delay(self, retried: int) -> float:
        """Seconds to wait before the retry that follows ``retried`` earlier retries."""
        # Cap the exponent so that a large retry count cannot overflow the float.
        wait = min(self.max, self.initial * self.factor ** min(retried, 64))
        return random.uniform(wait / 2, wait) if self.jitter else wait


def seconds(value: float | timedelta | None, what: str) -> float | None:
    """``value`` in seconds, validated as positive; ``what`` names it in the error."""
    if value is None:
        return None
    secs = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if not (math.isfinite(secs) and secs > 0):
        msg = f"{what} must be a positive number of seconds or timedelta, got {value!r}"
        raise ValueError(msg)
    return secs


class JobOpts(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Options of one job.

    Attributes:
        id: The job id; a new UUID when not given. Ids are idempotency keys: enqueueing an id
            that is already stored does nothing until that job's record expires or is deleted.
        eta: Run no earlier than this aware ``datetime``.
        queue: The queue to publish to.
        max_retries: How many times a failed run is retried; ``None`` takes the task's default
            (``TaskOpts.max_retries``), else 0.
        schedule: A 5-field cron expression (UTC): the job recurs, each run with its own id.
        timeout: Seconds (or a ``timedelta``) after which the handler is cancelled and the run
            fails; the task's default (``TaskOpts.timeout``) when not given.
        backoff: Delay between retries; the task's, then the server's, when not given.
    """

    id: str | None = None
    eta: datetime | None = None
    queue: str = DEFAULT_QUEUE
    max_retries: int | None = None
    schedule: str = ""
    timeout: float | timedelta | None = None
    backoff: Backoff | None = None

    def __post_init__(self) -> None:
        if self.eta is not None and self.eta.tzinfo is None:
            msg = (
                f"JobOpts.eta must be timezone-aware, got the naive datetime {self.eta!r}; "
                "use e.g. datetime.now(timezone.utc) + timedelta(minutes=5)"
            )
            raise ValueError(msg)
        max_retries = self.max_retries
        if max_retries is not None and (isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0):
            msg = f"JobOpts.max_retries must be an int >= 0, got {max_retries!r}"
            raise ValueError(msg)
        if not self.queue:
            msg = "JobOpts.queue must be a non-empty string"
            raise ValueError(msg)
        if self.id is not None and not self.id:
            msg = "JobOpts.id must be a non-empty string, or None for a new UUID"
            raise ValueError(msg)
        if self.timeout is not None:
            msgspec.structs.force_setattr(self, "timeout", seconds(self.timeout, "JobOpts.timeout"))


class Job(msgspec.Struct, frozen=True, omit_defaults=True):
    """One unit of work: a task name, the payload bytes its handler receives, and options.

    ``on_success`` jobs are enqueued when this job succeeds, each seeing this job's saved result
    as ``ctx.meta.prev_job_result``; ``on_error`` jobs when it has failed for good.
    """

    task: str
    payload: bytes
    opts: JobOpts = msgspec.field(default_factory=JobOpts)
    on_success: tuple[Job, ...] = ()
    on_error: tuple[Job, ...] = ()

    def __post_init__(self) -> None:
        payload: object = self.payload  # checked at run time: callers are not always type-checked
        if not isinstance(payload, bytes):
            msg = (
                f"Job payload must be bytes, got {type(payload).__name__}; "
                "encode it first, e.g. json.dumps(obj).encode() or msgspec.msgpack.encode(obj)"
            )
            raise TypeError(msg)
        if not isinstance(self.task, str) or not self.task:
            msg = f"Job task must be a non-empty string naming a registered task, got {self.task!r}"
            raise ValueError(msg)


class GroupOpts(msgspec.Struct, frozen=True, kw_only=True):
    """Options of a group: ``id`` is a new UUID when not given."""

    id: str | None = None


class Group(msgspec.Struct, frozen=True):
    """Jobs enqueued together; the group succeeds when all succeed and fails as soon as one fails."""

    jobs: Sequence[Job]
    opts: GroupOpts = msgspec.field(default_factory=GroupOpts)

    def __post_init__(self) -> None:
        if not self.jobs:
            msg = "a Group needs at least one job"
            raise ValueError(msg)


class ChainOpts(msgspec.Struct, frozen=True, kw_only=True):
    """Options of a chain: ``id`` is a new UUID when not given."""

    id: str | None = None


class Chain(msgspec.Struct, frozen=True):
    """Jobs run one after another, each seeing the previous one's result; fails with the first failure."""

    jobs: Sequence[Job]
    opts: ChainOpts = msgspec.field(default_factory=ChainOpts)

    def __post_init__(self) -> None:
        if len(self.jobs) < 2:
            msg = f"a Chain needs at least 2 jobs, got {len(self.jobs)}; enqueue a single job with Server.enqueue"
            raise ValueError(msg)
