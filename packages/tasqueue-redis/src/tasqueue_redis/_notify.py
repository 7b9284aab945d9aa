"""Waking waiters when jobs finish: one pub/sub channel per results store, one subscription per process.

A worker that records finished jobs (``set_many`` with success/failed ids) publishes their ids,
msgpack-encoded, on ``<prefix>:finished`` from the script that writes them: no extra round
trip, and nothing at all when no job finished. A process waiting on results subscribes while
it has waiters and hands each message to the waiters of the ids in it. Nothing is stored, so a
message published while nobody listens costs Redis one lookup; a message lost with a
connection only delays a waiter until its next status read (``tasqueue._waiting.RECHECK``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import AsyncIterator, Sequence
from typing import Any

import msgspec
from redis.exceptions import RedisError

from tasqueue.results import EventWatch

__all__ = ["Finishes"]

log = logging.getLogger("tasqueue.redis")

_encode = msgspec.msgpack.Encoder().encode
_decode_ids = msgspec.msgpack.Decoder(list[str]).decode
_CONFIRM_TIMEOUT = 5.0


class _Listener:
    """The subscription of one event loop (a connection belongs to the loop that opened it)."""

    def __init__(self, client: Any, channel: str) -> None:
        self.pubsub = client.pubsub()
        self.channel = channel
        self.watches: dict[str, set[EventWatch]] = {}
        self.lock = asyncio.Lock()
        self.confirmed = asyncio.Event()
        self.subscribed = False
        self.reader: asyncio.Task[None] | None = None

    async def subscribe(self) -> None:
        async with self.lock:
            if not self.subscribed:
                self.confirmed.clear()
                await self.pubsub.subscribe(self.channel)
                self.subscribed = True
                if self.reader is None or self.reader.done():
                    self.reader = asyncio.create_task(self._read(), name="tasqueue-redis-finished")
        # A finish published before Redis has processed the SUBSCRIBE would be missed; the
        # waiter reads the status only after this.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_CONFIRM_TIMEOUT):
                await self.confirmed.wait()

    async def unsubscribe_if_idle(self) -> None:
        async with self.lock:
            if self.subscribed and not self.watches:
                self.subscribed = False
                try:
                    await self.pubsub.unsubscribe(self.channel)
                except (RedisError, OSError):
                    log.debug("could not unsubscribe from %s", self.channel, exc_info=True)

    async def _read(self) -> None:
        while True:
            try:
                message = await self.pubsub.get_message(timeout=None)
            except (RedisError, OSError):
                # Waiters read their job's status again now, and later on their own schedule.
                log.warning("lost the subscription to %s; waiters fall back to reading statuses", self.channel)
                self._wake_all()
                async with self.lock:
                    self.subscribed = False
                    with contextlib.suppress(Exception):
                        await self.pubsub.reset()
                return
            if message is None:
                continue
            kind = message["type"]
            if kind == "subscribe":
                self.confirmed.set()
            elif kind == "message":
                try:
                    ids = _decode_ids(message["data"])
                except msgspec.DecodeError:
                    continue
                for id_ in ids:
                    for watch in self.watches.get(id_, ()):
                        watch.notify()

    def _wake_all(self) -> None:
        for watches in self.watches.values():
            for watch in watches:
                watch.notify()

    async def close(self) -> None:
        if self.reader is not None:
            self.reader.cancel()
            await asyncio.gather(self.reader, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.pubsub.aclose()


class Finishes:
    """The finished-jobs channel of one results store: publishing (``message``) and watching."""

    def __init__(self, client: Any, channel: str) -> None:
        self._client = client
        self.channel = channel
        self._listeners: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Listener] = weakref.WeakKeyDictionary()

    def message(self, ids: Sequence[str]) -> bytes:
        """The payload that announces ``ids`` as finished."""
        return _encode(list(ids))

    @contextlib.asynccontextmanager
    async def watch(self, ids: Sequence[str]) -> AsyncIterator[EventWatch]:
        loop = asyncio.get_running_loop()
        listener = self._listeners.get(loop)
        if listener is None:
            listener = self._listeners[loop] = _Listener(self._client, self.channel)
        watch = EventWatch()
        for id_ in ids:
            listener.watches.setdefault(id_, set()).add(watch)
        try:
            await listener.subscribe()
            yield watch
        finally:
            for id_ in ids:
                watching = listener.watches.get(id_)
                if watching is not None:
                    watching.discard(watch)
                    if not watching:
                        del listener.watches[id_]
            await listener.unsubscribe_if_idle()

    async def close(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        listener = self._listeners.pop(loop, None)
        if listener is not None:
            await listener.close()
