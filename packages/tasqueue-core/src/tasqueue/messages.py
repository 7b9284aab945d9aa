"""Wire types: the documents that travel through brokers and sit in result stores.

Every type here is a frozen msgspec Struct encoded as msgpack maps, so that readers in other
versions (or languages) find fields by name. The rules that keep old and new workers talking:
new fields get a default and go at the end; nothing is renamed, retyped or reused. Change a
message with ``msgspec.structs.replace``.
"""

from __future__ import annotations

import enum
from datetime import datetime

import msgspec

from tasqueue.jobs import DEFAULT_QUEUE, Job

__all__ = [
    "ChainMessage",
    "ChainMeta",
    "GroupMessage",
    "GroupMeta",
    "JobMessage",
    "JobStatus",
    "Meta",
]


class JobStatus(enum.StrEnum):
    """Where a job, group or chain is in its life; the strings of the Go original."""

    #: Stored and published; waiting for a worker (or for its ``eta``).
    QUEUED = "queued"
    #: A worker is running it (for groups and chains: some job is not finished yet).
    PROCESSING = "processing"
    #: The last run failed; it will run again after a backoff.
    RETRYING = "retrying"
    #: Failed for good: retries spent, unknown task, undecodable, or its workers kept dying.
    FAILED = "failed"
    #: The handler returned without raising.
    SUCCESSFUL = "successful"


class Meta(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What tasqueue knows about one job besides the job itself; a handler sees it as ``ctx.meta``.

    Attributes:
        id: The job id.
        on_success_ids: Ids of the ``on_success`` jobs enqueued when this job succeeded.
        status: A ``JobStatus``.
        queue: The queue the job was published to.
        schedule: The cron expression of a recurring job, else ``""``.
        max_retry: How many retries the job allows.
        retried: How many retries have happened so far.
        prev_err: The error of the last failed run, ``""`` if none.
        processed_at: When the current (or last) run started.
        prev_job_result: The saved result of the job whose ``on_success`` enqueued this one.
        enqueued_at: When the job was enqueued.
        schedule_id: For a run of a recurring job, the id that ``Server.cancel_schedule`` takes.
        group_id: The group this job belongs to, else ``""``.
        chain_id: The chain this job belongs to, else ``""``.
        released: How many times a shutting-down worker handed the job back unfinished.
        stalls: How many times a worker died (or lost its lease) while running this attempt.
    """

    id: str
    on_success_ids: list[str] = []
    status: JobStatus = JobStatus.QUEUED
    queue: str = DEFAULT_QUEUE
    schedule: str = ""
    max_retry: int = 0
    retried: int = 0
    prev_err: str = ""
    processed_at: datetime | None = None
    prev_job_result: bytes | None = None
    enqueued_at: datetime | None = None
    schedule_id: str = ""
    group_id: str = ""
    chain_id: str = ""
    released: int = 0
    stalls: int = 0


class JobMessage(Meta, frozen=True, kw_only=True, omit_defaults=True):
    """A job with its ``Meta``: what a broker carries and what ``Server.get_job`` returns.

    ``headers`` carry context across the queue (W3C trace context, for one); keys and values
    are strings.
    """

    job: Job
    headers: dict[str, str] = {}


class GroupMeta(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The state of a group: its status and the status of each of its jobs, by job id."""

    id: str
    status: JobStatus = JobStatus.PROCESSING
    job_status: dict[str, JobStatus] = {}


class GroupMessage(GroupMeta, frozen=True, kw_only=True, omit_defaults=True):
    """The stored group document that ``Server.get_group`` returns."""


class ChainMeta(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The state of a chain.

    Attributes:
        id: The chain id.
        status: ``successful`` once the last job is, ``failed`` with the first failure.
        job_id: The chain's current job (the last one once the chain has finished).
        prev_jobs: Ids of the chain's finished jobs, in order; all of them once it succeeded.
    """

    id: str
    status: JobStatus = JobStatus.QUEUED
    job_id: str = ""
    prev_jobs: list[str] = []


class ChainMessage(ChainMeta, frozen=True, kw_only=True, omit_defaults=True):
    """The stored chain document that ``Server.get_chain`` returns."""
