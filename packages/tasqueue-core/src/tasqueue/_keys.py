"""Names of the keys the core keeps in a results store, and the versions of job-status writes."""

from __future__ import annotations

import os
import uuid


def new_id() -> str:
    """A random (version 4) UUID string, made without ``uuid.uuid4()``'s object overhead.

    Enqueue calls this once per job; the stdlib path costs several times as much.
    """
    b = bytearray(os.urandom(16))
    b[6] = (b[6] & 0x0F) | 0x40
    b[8] = (b[8] & 0x3F) | 0x80
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def job_key(job_id: str) -> str:
    return f"job:{job_id}"


def result_key(job_id: str) -> str:
    return f"result:{job_id}"


def error_key(job_id: str) -> str:
    """The key of the traceback of a job's last failed run (``Inspector.job``)."""
    return f"error:{job_id}"


#: The keys of a finished job's records: a store's count retention drops them with its list entry.
RECORD_KEYS = (job_key, result_key, error_key)


def group_key(group_id: str) -> str:
    return f"group:{group_id}"


def chain_key(chain_id: str) -> str:
    return f"chain:{chain_id}"


def schedule_key(schedule_id: str) -> str:
    return f"schedule:{schedule_id}"


def derived_id(parent: str, kind: str, n: int | str) -> str:
    """A deterministic id for a job another job creates (follow-up, next cron run).

    Deterministic so that a parent run repeated after a crash creates the same child, which the
    stores then recognise instead of running it twice.
    """
    return str(uuid.uuid5(uuid.NAMESPACE_OID, f"tasqueue/{parent}/{kind}/{n}"))


# A job-status write carries a version that grows with the job's progress, so that a store keeps
# the newest state whatever order writes arrive in. Ordered by: retries done, times handed back by
# a shutdown, whether the attempt finished, deliveries of this attempt (a redelivery beats the
# worker that lost it), then phase. "Finished" sits above deliveries so that once any worker has
# finished an attempt, a redelivery of that same attempt cannot move its status back; and every
# finish of one attempt has the same version, so the first one wins and a second (a worker that
# lost its lease and finished anyway) is refused, and with it everything its outcome would do.
PHASE_QUEUED = 0
PHASE_RUNNING = 1
PHASE_HANDED_BACK = 2  # retrying, or released by a shutdown
PHASE_DONE = 3  # successful or failed

_FIELD = 0xFFFF


def status_version(retried: int, released: int, deliveries: int, phase: int) -> int:
    """The version of a job-status write; fits in 51 bits, so Lua's doubles hold it exactly."""
    if retried > _FIELD or released > _FIELD or deliveries > _FIELD:
        retried, released, deliveries = min(retried, _FIELD), min(released, _FIELD), min(deliveries, _FIELD)
    done = phase == PHASE_DONE
    if done:
        deliveries = 0
    return ((((retried << 16 | released) << 1 | done) << 16 | deliveries) << 2) | phase
