"""The worker's options, checked once where they are given: ``Server(...)``."""

from __future__ import annotations

import math
from dataclasses import dataclass

from tasqueue.jobs import Backoff


@dataclass(frozen=True, slots=True)
class Options:
    """What a worker needs to know besides its tasks (see ``Server`` for each one's meaning)."""

    backoff: Backoff
    shutdown_timeout: float
    max_stalls: int
    fetch_timeout: float
    unknown_task_timeout: float

    def __post_init__(self) -> None:
        backoff: object = self.backoff  # checked at run time: callers are not always type-checked
        if not isinstance(backoff, Backoff):
            msg = f"backoff must be a tasqueue.Backoff, got {type(backoff).__name__}"
            raise TypeError(msg)
        _seconds("shutdown_timeout", self.shutdown_timeout, "a number of seconds >= 0 (0 hands running jobs back at once)")
        _seconds("fetch_timeout", self.fetch_timeout, "a number of seconds > 0 (how long one fetch waits for work)", zero=False)
        _seconds("unknown_task_timeout", self.unknown_task_timeout, "a number of seconds >= 0 (0 fails such jobs at once)")
        if isinstance(self.max_stalls, bool) or not isinstance(self.max_stalls, int) or self.max_stalls < 0:
            msg = f"max_stalls must be an int >= 0 (how many worker deaths a job may cause), got {self.max_stalls!r}"
            raise ValueError(msg)


def _seconds(name: str, value: object, allowed: str, *, zero: bool = True) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if ok and (value > 0 or (zero and value == 0)):  # type: ignore[operator]
        return
    msg = f"{name} must be {allowed}, got {value!r}"
    raise ValueError(msg)
