"""One answer per question per ``ttl``, shared by every open tab.

Each page and live fragment asks the cache, not the Inspector: N tabs polling the overview every
two seconds make one backend round of queries per ``ttl``, not N (Bull Board's "every tab polls
every queue"; riverui keeps a shared cache for the same reason). Concurrent askers of a question
that is being answered wait for that answer instead of asking again.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

T = TypeVar("T")


class SharedCache:
    """Answers kept for ``ttl`` seconds, at most ``size`` of them (least recently used go first)."""

    def __init__(self, ttl: float, *, size: int = 256) -> None:
        self.ttl = ttl
        self.size = size
        self._answers: OrderedDict[Hashable, tuple[float, Any]] = OrderedDict()
        self._pending: dict[Hashable, asyncio.Future[Any]] = {}
        #: Backend queries made (answers computed), for tests and the benchmark.
        self.misses = 0

    async def get(self, key: Hashable, compute: Callable[[], Awaitable[T]]) -> T:
        now = time.monotonic()
        kept = self._answers.get(key)
        if kept is not None and kept[0] > now:
            self._answers.move_to_end(key)
            value: T = kept[1]
            return value
        pending = self._pending.get(key)
        if pending is not None:
            shared: T = await asyncio.shield(pending)
            return shared
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            self.misses += 1
            value = await compute()
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # retrieved here, so an unawaited failure logs nothing
            raise
        except BaseException:
            future.cancel()
            raise
        else:
            future.set_result(value)
            self._answers[key] = (time.monotonic() + self.ttl, value)
            self._answers.move_to_end(key)
            while len(self._answers) > self.size:
                self._answers.popitem(last=False)
            return value
        finally:
            del self._pending[key]

    def clear(self) -> None:
        """Forget every answer (after an action changed what they said)."""
        self._answers.clear()
