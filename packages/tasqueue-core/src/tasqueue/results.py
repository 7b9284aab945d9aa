"""The results protocol: where job messages, results and group/chain documents are stored.

A results store is a small key/value store with two ordered id lists (successful and failed
jobs). The store owns retention: keys and list entries expire after the store's ``expiry``
(a documented default, ``None`` keeps them), except keys written with ``persist=True``.

Versioned writes let a job's status only move forward: the core gives each status write a
``version`` that grows with the job's progress, and a store keeps the higher one, so a late
write from a worker that lost its lease never overwrites what another worker finished. The
status write is also the fence of everything else an outcome does: its success/failed list
entry rides on the write (``Write.success`` / ``Write.failed``) and is added only if the write
happens, in the same atomic step where the store allows it, and the worker publishes a job's
follow-ups only once its status write happened.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Protocol, runtime_checkable

import msgspec

from tasqueue._keys import RECORD_KEYS
from tasqueue.errors import NotFoundError

__all__ = ["RECORD_KEYS", "EventWatch", "FinishWatch", "NotifyingResults", "Results", "Write"]


class Write(msgspec.Struct, frozen=True):
    """One key to set in a batch (``Results.set_many``).

    Attributes:
        key: The key.
        value: The bytes to store.
        version: If given, write only when the key is absent or holds a lower version
            (``0`` therefore means "only if absent"). A write without a version always
            happens and leaves the key unversioned (which counts as lowest).
        persist: Keep the key until it is deleted, instead of for the store's expiry.
        success: An id to add to the success list if (and only if) this write happens.
        failed: An id to add to the failed list if (and only if) this write happens.

    A versioned write "happens" when it is applied, and also when the key already holds this
    very value at this very version: a batch replayed after a lost reply reports the writes
    it made the first time as made (and their list entries stay added once).
    """

    key: str
    value: bytes
    version: int | None = None
    persist: bool = False
    success: str = ""
    failed: str = ""


@runtime_checkable
class Results(Protocol):
    """A results store. Every method may raise ``tasqueue.errors.ResultsError``.

    A class that names ``Results`` as its base inherits ``get`` and ``set``, built on
    ``get_many`` and ``set_many``; a store with a cheaper single read or write overrides them.
    """

    async def get(self, key: str) -> bytes:
        """The value of ``key``; raises ``tasqueue.errors.NotFoundError`` if absent or expired."""
        (value,) = await self.get_many([key])
        if value is None:
            msg = f"nothing stored under {key!r}"
            raise NotFoundError(msg)
        return value

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """The values of ``keys``, ``None`` for each one absent."""
        ...

    async def set(self, key: str, value: bytes, *, version: int | None = None, persist: bool = False) -> bool:
        """Set one key (see ``Write``); return whether it was written."""
        return (await self.set_many([Write(key, value, version, persist)]))[0]

    async def set_many(
        self,
        writes: Sequence[Write],
        *,
        success: Sequence[str] = (),
        failed: Sequence[str] = (),
    ) -> list[bool]:
        """Apply ``writes`` in order, then add ids to the success and failed lists.

        Returns, per write, whether it happened (see ``Write``); a write's own ``success`` /
        ``failed`` id goes on its list only if it did, atomically with it where the store
        allows. ``success`` and ``failed`` here are added whatever the writes did. This is the
        worker's hot path: a good implementation does it all in one round trip.
        """
        ...

    async def delete(self, keys: Sequence[str], *, ids: Sequence[str] = ()) -> None:
        """Delete ``keys``, and remove ``ids`` from the success and failed lists."""
        ...

    async def get_success(self) -> list[str]:
        """Ids of successful jobs, oldest first, unexpired."""
        ...

    async def get_failed(self) -> list[str]:
        """Ids of failed jobs, oldest first, unexpired."""
        ...

    async def close(self) -> None:
        """Release connections; the store is not used afterwards."""
        ...


class FinishWatch(Protocol):
    """What ``NotifyingResults.watch`` yields: a way to sleep until a watched job finishes."""

    async def wait(self, timeout: float) -> bool:
        """Sleep until a watched id is added to the success or failed list, at most ``timeout`` seconds.

        Returns True when woken by such an add (one that happened since the watch began or
        since the last True), False on timeout. A spurious True is allowed: the caller reads
        the job's status again either way.
        """
        ...


@runtime_checkable
class NotifyingResults(Protocol):
    """An optional capability of a results store: telling waiters that jobs finished.

    ``Server.wait`` and ``Server.result`` use it, when a store has it, to sleep until a job's
    id is added to the success or failed list (by ``set_many``, in any process) instead of
    reading the job's status over and over. A store without it is polled.
    """

    def watch(self, ids: Sequence[str]) -> AbstractAsyncContextManager[FinishWatch | None]:
        """Watch ``ids``: every success/failed add of one of them after ``__aenter__`` returns wakes the watch.

        A store that cannot notify at the moment (its connection is down, a client kind without
        the means) yields ``None``, and the caller polls instead.
        """
        ...


class EventWatch:
    """A ready-made ``FinishWatch``: the store calls ``notify()``, from any thread, when a watched id finishes.

    Build it inside the waiter's event loop (in ``watch``'s ``__aenter__``).
    """

    __slots__ = ("_event", "_loop")

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()

    def notify(self) -> None:
        """Wake the waiter; safe to call from another event loop or thread."""
        try:
            same_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            same_loop = False
        if same_loop:
            self._event.set()
        elif not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._event.set)

    async def wait(self, timeout: float) -> bool:
        try:
            async with asyncio.timeout(timeout):
                await self._event.wait()
        except TimeoutError:
            return False
        self._event.clear()
        return True
