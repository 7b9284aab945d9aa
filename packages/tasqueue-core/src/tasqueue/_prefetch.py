"""Prefetch sizing: how many jobs a queue leases beyond its free slots.

Enough that the slots do not sit idle while a fetch travels: the work that finishes during one
fetch (completion rate x fetch time), doubled for slack, at most one more round of the
concurrency. Short jobs so get a buffer and long ones none: a worker busy with long jobs does
not hoard what idle workers could run. Below one job per fetch (an in-process broker, or slow
jobs) the slots hardly idle, and a small buffer would only fragment the fetches.
"""

from __future__ import annotations

_RATE_WINDOW = 0.1  # seconds over which the completion rate is measured


class Prefetch:
    """The prefetch of one queue, learnt from its fetches and completions."""

    __slots__ = ("_completed_then", "_concurrency", "_fetch_time", "_measured_at", "_rate")

    def __init__(self, concurrency: int, now: float) -> None:
        self._concurrency = concurrency
        self._rate = 0.0  # jobs finished per second
        self._fetch_time = 0.0  # seconds one fetch takes when work is waiting
        self._measured_at = now
        self._completed_then = 0

    def extra(self) -> int:
        """How many jobs to lease beyond the free slots now."""
        during = self._rate * self._fetch_time
        return min(self._concurrency, int(2 * during)) if during >= 1 else 0

    def fetched(self, asked: int, got: int, started: float, now: float, completed: int) -> None:
        """Learn from a fetch that asked for ``asked`` jobs at ``started`` and got ``got`` at ``now``.

        ``completed`` is how many jobs of the queue have finished so far.
        """
        if got == asked:  # work was waiting: this fetch took one round trip, not a wait
            self._fetch_time = 0.8 * self._fetch_time + 0.2 * (now - started)
        if now - self._measured_at >= _RATE_WINDOW:  # short windows would mistake a burst for a rate
            self._rate = 0.5 * self._rate + 0.5 * (completed - self._completed_then) / (now - self._measured_at)
            self._measured_at, self._completed_then = now, completed
