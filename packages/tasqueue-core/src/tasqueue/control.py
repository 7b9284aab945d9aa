"""The control-plane protocol: what a broker keeps so that the ``Inspector`` answers in bounded time.

A broker that supports inspection exposes ``broker.control``, an object implementing
``ControlPlane``. It answers from structures the backend keeps anyway (its queues, its delayed
and leased sets) plus a few indexes the workers feed it once per heartbeat: jobs finished per
queue and state, jobs waiting to be retried, live workers, paused queues, schedules. Every call
costs a bounded amount whatever number of jobs is stored: counts come from cardinalities,
pages from ranges of ordered indexes.

Like a broker, the control plane moves bytes; only the core encodes and decodes worker and
schedule records. Backends prove they honour this contract with ``tasqueue.testing.InspectorSuite``.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import msgspec

__all__ = ["ControlPlane", "Counts", "Finished", "JobState", "Listed", "control_of"]


class JobState(enum.StrEnum):
    """Where a job is, as an operator sees it; each is listed and counted per queue."""

    #: Ready, waiting for a worker.
    QUEUED = "queued"
    #: Waiting for its ``eta`` (or a worker passing on a task it does not know).
    DELAYED = "delayed"
    #: Leased by a worker.
    RUNNING = "running"
    #: Failed, waiting out its backoff before it runs again.
    RETRYING = "retrying"
    #: Finished without error.
    SUCCESSFUL = "successful"
    #: Failed for good.
    FAILED = "failed"


class Counts(msgspec.Struct, frozen=True, kw_only=True):
    """How many jobs of one queue are in each state, and whether workers fetch from it.

    ``successful`` and ``failed`` count the jobs the indexes hold (trimmed by age and size);
    ``total_successful`` and ``total_failed`` only ever grow, so that rates are their differences.
    """

    queued: int = 0
    delayed: int = 0
    running: int = 0
    retrying: int = 0
    successful: int = 0
    failed: int = 0
    paused: bool = False
    total_successful: int = 0
    total_failed: int = 0

    def get(self, state: JobState) -> int:
        count: int = getattr(self, state.value)
        return count


class Finished(msgspec.Struct, frozen=True):
    """An index entry a worker reports: job ``id`` of ``queue`` entered ``state`` at ``at``.

    ``at`` is Unix time in seconds. For ``retrying`` it is when the retry comes due, and the
    entry stops counting after that.
    """

    queue: str
    id: str
    state: JobState
    at: float


class Listed(msgspec.Struct, frozen=True):
    """One entry of a page: a job id, its index time (Unix seconds; 0 if none), and the broker's bytes if it holds them."""

    id: str
    at: float = 0.0
    data: bytes | None = None


@runtime_checkable
class ControlPlane(Protocol):
    """Inspection and control of one broker's queues. Every method may raise ``BrokerError``."""

    async def queues(self) -> list[str]:
        """Names of the queues anything was ever published to, or consumed, paused or indexed on."""
        ...

    async def counts(self, queues: Sequence[str]) -> list[Counts]:
        """The counts of each queue, in order, from counters and cardinalities, never a scan."""
        ...

    async def page(
        self, queue: str, state: JobState, *, cursor: str | None, limit: int, newest_first: bool
    ) -> tuple[list[Listed], str | None]:
        """Up to ``limit`` jobs of ``queue`` in ``state`` after ``cursor``; and the next cursor (``None``: the end).

        Pages of ordered indexes (all states but ``queued``) are stable under concurrent
        changes; ``queued`` pages are positions in the live queue, which may shift by what
        was consumed or enqueued in between.
        """
        ...

    async def held(self, queue: str, ids: Sequence[str]) -> list[str]:
        """The ids of ``ids`` whose message the broker still holds (waiting, delayed or leased)."""
        ...

    async def remove(self, queue: str, ids: Sequence[str]) -> list[str]:
        """Drop messages that wait (queued, delayed, retrying; not leased); return the ids dropped."""
        ...

    async def remove_all(self, queue: str, state: JobState, limit: int) -> list[str]:
        """Drop up to ``limit`` waiting messages in ``state`` (queued, delayed or retrying), oldest first; return their ids."""
        ...

    async def promote(self, queue: str, ids: Sequence[str]) -> list[str]:
        """Make delayed or retrying messages ready now; return the ids moved."""
        ...

    async def record(self, entries: Sequence[Finished]) -> None:
        """Add entries to the per-queue indexes (trimmed by the backend's retention)."""
        ...

    async def forget(self, queue: str, state: JobState, ids: Sequence[str]) -> None:
        """Remove ids from the index of ``state`` (successful, failed or retrying)."""
        ...

    async def set_paused(self, queue: str, paused: bool) -> None:
        """Pause or resume fetching from ``queue`` (enqueues still land)."""
        ...

    async def paused(self) -> set[str]:
        """The paused queues."""
        ...

    async def beat(self, worker_id: str, record: bytes, ttl: float) -> None:
        """Store a worker's record, alive for ``ttl`` seconds unless beaten again."""
        ...

    async def leave(self, worker_id: str) -> None:
        """Remove a worker's record (it stopped)."""
        ...

    async def workers(self) -> list[bytes]:
        """The records of live workers."""
        ...

    async def note_schedules(self, records: Sequence[tuple[str, bytes]]) -> None:
        """Store ``(schedule_id, record)`` pairs, replacing older records of the same schedule."""
        ...

    async def schedules(self) -> list[tuple[str, bytes]]:
        """Every stored schedule record."""
        ...

    async def drop_schedules(self, ids: Sequence[str]) -> None:
        """Forget schedules (cancelled ones)."""
        ...


def control_of(broker: object) -> ControlPlane | None:
    """The broker's control plane, or ``None`` if it has none."""
    control = getattr(broker, "control", None)
    return control if isinstance(control, ControlPlane) else None
