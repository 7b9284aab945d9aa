"""``Clock``: time a test moves by hand, shared by the event loop, memory:// and the Server."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

__all__ = ["Clock"]


class Clock:
    """A clock that runs with real time plus an offset the test moves forward with ``advance``.

    Installed on an event loop (``Harness`` does that), it is that loop's ``time()``, so
    ``asyncio.sleep``, ``asyncio.timeout`` (a job's timeout), the worker's timers and memory://'s
    delays and leases all see the jump; ``now()`` is the wall clock the Server reads for ETAs and
    cron ticks. Blocking calls in threads (``time.sleep`` in a sync handler) still take real time.
    """

    def __init__(self) -> None:
        self._offset = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None

    def monotonic(self) -> float:
        """The moved monotonic time, in seconds: what the loop's ``time()`` returns once installed."""
        return time.monotonic() + self._offset

    def now(self) -> datetime:
        """The moved wall-clock time, aware, in UTC."""
        return datetime.now(UTC) + timedelta(seconds=self._offset)

    def advance(self, seconds: float | timedelta) -> None:
        """Move time forward: timers, delayed jobs, retries and cron ticks due by then become due."""
        step = seconds.total_seconds() if isinstance(seconds, timedelta) else float(seconds)
        if step < 0:
            msg = f"a clock only moves forward; got {seconds!r}"
            raise ValueError(msg)
        self._offset += step

    @property
    def offset(self) -> float:
        """Seconds moved so far."""
        return self._offset

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        """Make this clock ``loop``'s time. The loop must be one of asyncio's own (uvloop is not)."""
        if self._loop is not None:
            msg = "this clock is installed on a loop already"
            raise RuntimeError(msg)
        try:
            # asyncio's loops read their time through self.time() alone: timers, call_later, timeouts.
            loop.time = self.monotonic  # type: ignore[method-assign]
        except (AttributeError, TypeError) as exc:
            msg = f"cannot control the time of {type(loop).__name__}; run the test on asyncio's own event loop"
            raise RuntimeError(msg) from exc
        self._loop = loop

    def uninstall(self) -> None:
        """Give the loop its own time back."""
        if self._loop is not None:
            del self._loop.time
            self._loop = None

    def __repr__(self) -> str:
        return f"Clock(offset={self._offset:g}s)"
