"""Where the core reads the wall-clock time, so that tests can move it (``tasqueue.testing.Clock``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    """A wall clock: ``now()`` is an aware UTC ``datetime``."""

    def now(self) -> datetime: ...


class SystemClock:
    """The system's clock."""

    __slots__ = ()

    def now(self) -> datetime:
        return datetime.now(UTC)
