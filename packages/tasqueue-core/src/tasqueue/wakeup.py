"""``Wakeup``: how a backend's ``fetch`` waits for work without a blocking primitive to lean on.

A Server may call a backend from more than one event loop and thread: ``srv.sync`` runs its
calls on a private loop in a background thread, and a module-level Server outlives the loop of
each test that uses it. An ``asyncio.Event`` binds itself to the first loop that waits on it and
is not safe to set from another thread; ``Wakeup`` is both. Arm a waiter *before* looking for
work, so that a notify arriving between the look and the wait is not lost::

    while True:
        with self._wakeup.waiter() as waiter:
            found = self._claim(queue, max_count)        # look
            if found or remaining <= 0:
                return found
            await waiter.wait(min(remaining, poll))      # sleep until notified or poll is due

and call ``self._wakeup.notify()`` after every change that makes work ready (an enqueue, a
nack). A notify only reaches waiters in this process; a store shared between processes still
polls for the others' writes, which is what ``poll`` is for.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

__all__ = ["Waiter", "Wakeup"]


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Waiter:
    """One armed wait, from ``Wakeup.waiter()``: use it as a context manager, which disarms it."""

    __slots__ = ("_future", "_wakeup")

    def __init__(self, wakeup: Wakeup, future: asyncio.Future[None]) -> None:
        self._wakeup = wakeup
        self._future = future

    async def wait(self, timeout: float) -> bool:
        """Wait until notified (``True``) or until ``timeout`` seconds passed (``False``)."""
        if not self._future.done():
            try:
                async with asyncio.timeout(max(timeout, 0.0)):
                    await self._future
            except TimeoutError:
                return False
        return not self._future.cancelled()

    def __enter__(self) -> Waiter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._wakeup._disarm(self._future)


class Wakeup:
    """Wakes the fetches waiting for work, on any event loop in any thread of this process."""

    __slots__ = ("_lock", "_waiting")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: set[asyncio.Future[None]] = set()

    def waiter(self) -> Waiter:
        """An armed waiter: it sees every ``notify`` from now until it is disarmed (the ``with`` block ends).

        Call it inside the event loop that will wait (the waiter belongs to that loop).
        """
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with self._lock:
            self._waiting.add(future)
        return Waiter(self, future)

    def _disarm(self, future: asyncio.Future[None]) -> None:
        with self._lock:
            self._waiting.discard(future)

    def notify(self) -> None:
        """Wake every armed waiter. Callable from any thread, inside or outside an event loop."""
        if not self._waiting:  # the common case, without the lock: a waiter is armed before it looks
            return
        with self._lock:
            waiting, self._waiting = self._waiting, set()
        try:
            current: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            current = None
        for future in waiting:
            loop = future.get_loop()
            if loop is current:
                _wake(future)
            elif not loop.is_closed():
                with contextlib.suppress(RuntimeError):  # closed meanwhile: nobody waits there any more
                    loop.call_soon_threadsafe(_wake, future)
