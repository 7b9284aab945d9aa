"""Logging a dependency that fails and recovers: one line per change of state, not per retry.

An operator reading a worker's log wants to know when the broker went away, that it is still
away, and when it came back, not a traceback per retry. ``Outage`` logs the first failure with
its traceback, then a "still failing" line every ``every`` seconds (each retry's traceback only
at debug level), and one line when the thing works again.
"""

from __future__ import annotations

import logging
import time

_RETRY_MIN, _RETRY_MAX = 0.05, 5.0


class Outage:
    """The state of one thing a worker retries (fetching from a queue, writing outcomes, ...)."""

    __slots__ = ("_delay", "_every", "_failures", "_last_said", "_log", "_since", "_what")

    def __init__(self, log: logging.Logger, what: str, *, every: float = 30.0) -> None:
        self._log = log
        self._what = what
        self._every = every
        self._since: float | None = None
        self._last_said = 0.0
        self._failures = 0
        self._delay = _RETRY_MIN

    @property
    def down(self) -> bool:
        return self._since is not None

    def failed(self, exc: BaseException) -> float:
        """Record a failure and log it if that is news; return how long to wait before retrying."""
        now = time.monotonic()
        self._failures += 1
        if self._since is None:
            self._since = self._last_said = now
            self._log.error(
                "%s failed: %s; retrying every %g-%gs, logging every %gs until it works",
                self._what,
                _describe(exc),
                _RETRY_MIN,
                _RETRY_MAX,
                self._every,
                exc_info=exc,
            )
        else:
            self._log.debug("%s failed again", self._what, exc_info=exc)
            if now - self._last_said >= self._every:
                self._last_said = now
                self._log.warning(
                    "%s still failing after %.0fs (%d tries): %s", self._what, now - self._since, self._failures, _describe(exc)
                )
        delay = self._delay
        self._delay = min(delay * 2, _RETRY_MAX)
        return delay

    def ok(self) -> None:
        """Record a success; log the recovery if it ends an outage."""
        if self._since is not None:
            down_for = time.monotonic() - self._since
            self._log.warning("%s works again after %.1fs (%d failed tries)", self._what, down_for, self._failures)
            self._since = None
        self._failures = 0
        self._delay = _RETRY_MIN


def _describe(exc: BaseException) -> str:
    """The exception and the innermost cause, on one line (clients chain several)."""
    text = f"{type(exc).__name__}: {exc}"
    root = exc
    for _ in range(20):  # chains are short; a cycle must not hang the logger
        cause = root.__cause__ or (None if root.__suppress_context__ else root.__context__)
        if cause is None:
            break
        root = cause
    if root is not exc and str(root) not in text:
        text += f" (caused by {type(root).__name__}: {root})"
    return text
