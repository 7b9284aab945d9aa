"""``BlockingServer``: a Server's API for synchronous code (web views, scripts, notebooks).

Every call runs the Server's coroutine on an event loop and blocks until it is done: on the
worker's loop while ``srv.start()`` runs in another thread, else on a private loop in a
daemon thread. Get one as ``srv.sync``::

    srv = Server("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0")
    job_id = srv.sync.enqueue(Job("add", b"1 2"))
    print(srv.sync.get_job(job_id).status)
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from tasqueue.jobs import DEFAULT_QUEUE, Chain, Group, Job
    from tasqueue.messages import ChainMessage, GroupMessage, JobMessage
    from tasqueue.server import Server
else:
    from tasqueue.jobs import DEFAULT_QUEUE

__all__ = ["BlockingServer"]

T = TypeVar("T")


class BlockingServer:
    """Blocking twins of ``Server``'s coroutine methods; see the module docstring."""

    def __init__(self, server: Server) -> None:
        self._server = server
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _private_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                self._thread = threading.Thread(target=loop.run_forever, name="tasqueue-sync", daemon=True)
                self._thread.start()
                self._loop = loop
            return self._loop

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        loop = self._server.running_loop or self._private_loop()
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            coro.close()
            msg = "srv.sync blocks; inside async code on the same loop, await the Server's methods instead"
            raise RuntimeError(msg)
        return asyncio.run_coroutine_threadsafe(coro, loop).result()

    def enqueue(self, job: Job) -> str:
        return self._call(self._server.enqueue(job))

    def enqueue_many(self, jobs: Sequence[Job]) -> list[str]:
        return self._call(self._server.enqueue_many(jobs))

    def enqueue_group(self, group: Group) -> str:
        return self._call(self._server.enqueue_group(group))

    def enqueue_chain(self, chain: Chain) -> str:
        return self._call(self._server.enqueue_chain(chain))

    def cancel_schedule(self, schedule_id: str) -> None:
        self._call(self._server.cancel_schedule(schedule_id))

    def get_job(self, job_id: str) -> JobMessage:
        return self._call(self._server.get_job(job_id))

    def get_result(self, job_id: str) -> bytes:
        return self._call(self._server.get_result(job_id))

    def wait(self, job_id: str, *, timeout: float | None = None) -> JobMessage:
        return self._call(self._server.wait(job_id, timeout=timeout))

    def result(self, job_id: str, *, type: Any = None, timeout: float | None = None) -> Any:
        """``Server.result``: wait for a job and return its result (decoded as ``type`` when given)."""
        return self._call(self._server.result(job_id, type=type, timeout=timeout))

    def delete_job(self, job_id: str) -> None:
        self._call(self._server.delete_job(job_id))

    def get_pending(self, queue: str = DEFAULT_QUEUE) -> list[JobMessage]:
        return self._call(self._server.get_pending(queue))

    def get_success(self) -> list[str]:
        return self._call(self._server.get_success())

    def get_failed(self) -> list[str]:
        return self._call(self._server.get_failed())

    def get_group(self, group_id: str) -> GroupMessage:
        return self._call(self._server.get_group(group_id))

    def get_chain(self, chain_id: str) -> ChainMessage:
        return self._call(self._server.get_chain(chain_id))

    def close(self) -> None:
        """Close the Server's backends and stop the private loop, if one was started."""
        self._call(self._server.close())
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.close()
