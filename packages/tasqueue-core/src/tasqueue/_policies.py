"""Small decisions a worker takes about a job, each with its reason: stalls, unknown tasks.

Kept apart from the run itself so that each rule reads (and is tested) in one place.
"""

from __future__ import annotations

import logging
from datetime import datetime

from tasqueue.jobs import Backoff
from tasqueue.messages import JobMessage

# When a worker dies, every job it was running comes back, and most of them merely ran beside the
# one that killed it. Blaming each would park innocent jobs after a few crashes; so deaths count
# against a job only while it runs alone. Running every redelivered job alone would serialise all
# that a big worker held when it was killed (an OOM kill, a deploy), so the first death is
# forgiven: a job whose workers died twice in one attempt runs alone from then on, and each
# death after that is its own.
_ALONE_FROM = 3  # the delivery from which a job runs alone


def runs_alone(deliveries: int) -> bool:
    """Whether a job with this many deliveries (of one attempt) must run with no other job beside it."""
    return deliveries >= _ALONE_FROM


def stalls_charged(deliveries: int) -> int:
    """How many worker deaths a job with this many deliveries (of one attempt) is blamed for:
    those during its lone runs."""
    return max(0, deliveries - _ALONE_FROM)


def unknown_task_delay(msg: JobMessage, now: datetime, timeout: float, backoff: Backoff) -> float | None:
    """When to offer a job with an unknown task to another worker, or ``None`` once time is up.

    Passes grow sparser the longer nobody takes the job (a quarter of the time it has waited,
    between the backoff's first delay and its maximum), and stop ``timeout`` seconds after the
    job came due.
    """
    due = max(filter(None, (msg.enqueued_at, msg.job.opts.eta)), default=now)
    waited = (now - due).total_seconds()
    left = timeout - waited
    if left <= 0:
        return None
    return min(max(backoff.delay(0), waited / 4), backoff.max, left)


class UnknownTasks:
    """Logs each unknown task once at warning level (then at debug), not once per pass."""

    def __init__(self, log: logging.Logger, timeout: float) -> None:
        self._log = log
        self._timeout = timeout
        self._seen: set[str] = set()

    def passed_on(self, msg: JobMessage, delay: float) -> None:
        task = msg.job.task
        if task in self._seen:
            self._log.debug("no handler for task %r (job %s); passed on again, back in %.2fs", task, msg.id, delay)
            return
        self._seen.add(task)
        self._log.warning(
            "no handler for task %r on this worker (job %s); passing such jobs on to other workers of the queue, "
            "failing them %gs after they came due (logged once per task)",
            task,
            msg.id,
            self._timeout,
        )
