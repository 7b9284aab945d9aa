"""The timed span of a peer's run, stamped inside its worker: first to last of N completions."""

from __future__ import annotations

import threading
import time
from typing import Any


class Span:
    """Counts completions across worker threads; at the ``expect``-th, pushes "first last" to Redis."""

    def __init__(self, expect: int) -> None:
        self.expect = expect
        self._lock = threading.Lock()
        self._done = 0
        self._first = 0.0

    def completed(self, client: Any) -> None:
        with self._lock:
            self._done += 1
            now = time.time()
            if self._done == 1:
                self._first = now
            if self._done != self.expect:
                return
        client.rpush("peer:span", f"{self._first!r} {now!r}")
