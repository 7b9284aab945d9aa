"""Recurring jobs with a stable identity: starting one is idempotent, declaring one is declarative.

A schedule is a marker in the results store (``schedule:<id>``, kept until deleted) and a chain
of runs: each run enqueues the next before it starts (``Worker._schedule_next``), and a run whose
marker is gone is dropped. The id is what makes it idempotent:

- ``srv.enqueue(Job(..., JobOpts(schedule="*/5 * * * *")))`` without an id gets one derived from
  the task, queue, cron expression and payload, and writes the marker only if it is absent: the
  same schedule enqueued at every start of an app is still one schedule, run once per tick.
- ``srv.schedule(name, job, cron)`` (or ``@srv.task(schedule=...)``) declares a schedule by name;
  a worker makes the store match its declarations when it starts (``sync``). The id is derived
  from the name and the definition, so a changed definition replaces the old chain, and a
  schedule of one of the worker's tasks that its code no longer declares is removed. Workers
  keep what was declared by name in one document (``schedules``) to find those.

Every active schedule, declared or started, is listed by ``Inspector.schedules()``.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import TYPE_CHECKING

import msgspec

from tasqueue import _schedule
from tasqueue._codec import encode
from tasqueue._keys import derived_id, schedule_key
from tasqueue.jobs import Job

if TYPE_CHECKING:
    from tasqueue.server import Server

#: The results-store key of the document listing declared schedules.
INDEX_KEY = "schedules"
_CAS_TRIES = 20


class Declared(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A declared schedule as the index keeps it; ``id`` changes with the definition."""

    name: str
    id: str
    cron: str
    task: str
    queue: str


class _Index(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    rev: int = 0
    schedules: dict[str, Declared] = {}


_decode_index = msgspec.msgpack.Decoder(_Index).decode


def stable_id(job: Job) -> str:
    """The id of a schedule started without one: the same for the same task, queue, cron and payload."""
    digest = hashlib.sha256(job.payload).hexdigest()
    return derived_id("schedule", "stable", "\x00".join((job.task, job.opts.queue, job.opts.schedule, digest)))


def definition(name: str, job: Job, cron: str) -> Job:
    """``job`` as the schedule ``name`` runs it: recurring on ``cron``, under an id naming its definition."""
    _schedule.validate(cron)
    opts = msgspec.structs.replace(job.opts, schedule=cron, id=None)
    definition = encode(msgspec.structs.replace(job, opts=opts))
    sid = derived_id("schedule", name, hashlib.sha256(definition).hexdigest())
    return msgspec.structs.replace(job, opts=msgspec.structs.replace(opts, id=sid))


async def start(server: Server, job: Job) -> str:
    """Start the schedule of ``job`` unless it already runs; return its id (its first run's id)."""
    if job.opts.id is None:
        job = msgspec.structs.replace(job, opts=msgspec.structs.replace(job.opts, id=stable_id(job)))
    first = server._publisher.message(job)
    # The marker goes first and only if absent: if it exists, the schedule runs already.
    if not await server.results.set(schedule_key(first.id), encode(first), version=0, persist=True):
        server.log.debug("schedule %s exists already; not started again", first.id)
        return first.id
    try:
        await server._enqueue_messages([first])
    except BaseException:
        # Without its first run the schedule would never fire, and its marker would make every
        # later start a no-op: take it back.
        await asyncio.shield(server.results.delete([schedule_key(first.id)]))
        raise
    return first.id


_RETRY_FIRST, _RETRY_MAX = 1.0, 60.0


async def start_sync(server: Server) -> asyncio.Task[None] | None:
    """Sync the declared schedules before a worker starts; if the store fails, keep trying meanwhile.

    A results store that is down when a worker starts should not stop the worker (its fetch
    loop rides out outages too), nor leave the schedules unsynced: the first try is awaited, and
    after a failure a task retries with a growing delay and is returned for the caller to cancel.
    """
    try:
        await sync(server)
    except Exception as exc:  # a store error, whatever its kind: retried below
        server.log.error("could not sync the declared schedules (%s); retrying while the worker runs", exc)
        return asyncio.create_task(_sync_until_done(server), name="tasqueue-schedules")
    return None


async def _sync_until_done(server: Server) -> None:
    delay = _RETRY_FIRST
    while True:
        await asyncio.sleep(delay)
        try:
            await sync(server)
        except Exception as exc:  # as above
            delay = min(delay * 2, _RETRY_MAX)
            server.log.debug("syncing the declared schedules failed again (%s); next try in %.0fs", exc, delay)
        else:
            server.log.info("declared schedules synced")
            return


async def sync(server: Server) -> None:
    """Make the stored schedules match what ``server`` declares; called when its worker starts.

    Declared schedules are started (a no-op when they run already). A schedule whose definition
    changed, or that the code no longer declares although this worker has its task, is stopped:
    its marker is deleted, so its queued run is dropped when it comes due.
    """
    wanted = {name: definition(name, job, cron) for name, (job, cron) in server.declared_schedules.items()}
    for _ in range(_CAS_TRIES):
        index = await _read_index(server)
        current = dict(index.schedules)
        stale: list[str] = []
        for name, entry in index.schedules.items():
            job = wanted.get(name)
            if job is not None:
                if entry.id != job.opts.id:
                    stale.append(entry.id)
            elif entry.task in server.tasks:
                stale.append(entry.id)
                del current[name]
        for name, job in wanted.items():
            assert job.opts.id is not None
            current[name] = Declared(name=name, id=job.opts.id, cron=job.opts.schedule, task=job.task, queue=job.opts.queue)
        if current != index.schedules:
            updated = _Index(rev=index.rev + 1, schedules=current)
            # Versioned by revision: if another worker rewrote the index meanwhile, read it again.
            if not await server.results.set(INDEX_KEY, encode(updated), version=updated.rev, persist=True):
                continue
        if stale:
            await server.results.delete([schedule_key(i) for i in stale])
            server.log.info("stopped %d schedule(s) changed or no longer declared", len(stale))
        for job in wanted.values():
            await start(server, job)
        return
    msg = "could not update the schedule index: other workers kept rewriting it"
    raise RuntimeError(msg)


async def _read_index(server: Server) -> _Index:
    (raw,) = await server.results.get_many([INDEX_KEY])
    return _Index() if raw is None else _decode_index(raw)
