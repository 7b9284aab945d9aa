"""Pieces the suites share: declared capabilities, waiting for a condition, a running worker."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, overload

import pytest
import pytest_asyncio

from tasqueue.broker import Broker
from tasqueue.results import Results
from tasqueue.server import Server

T = TypeVar("T")


@dataclass(frozen=True)
class Capabilities:
    """What a backend supports; a test needing a missing capability is skipped, not failed.

    Attributes:
        delayed: Messages can be published with a delay (``Envelope.delay``, job ``eta``, retry backoff).
        dedupe: ``enqueue`` skips an id the broker already holds.
        lease_expiry: An unsettled lease runs out after ``visibility_timeout`` and the message
            is delivered again.
        expiry: The results store expires keys and list entries after its ``expiry``.
        inspect: The broker has a control plane (``broker.control``, see ``tasqueue.control``),
            so that ``tasqueue.Inspector`` works on it.
        any_loop: The backend may be used from one event loop after another, and from another
            thread's loop (``srv.sync``, a module-level Server under pytest-asyncio).
        count_retention: The results store takes a ``list_limit``: each of the success and
            failed lists keeps that many ids at most, and an id that falls off takes its job's
            records (``tasqueue.results.RECORD_KEYS``) with it, so records are bounded by count
            as well as by age.
    """

    delayed: bool = True
    dedupe: bool = True
    lease_expiry: bool = True
    expiry: bool = True
    inspect: bool = True
    any_loop: bool = True
    count_retention: bool = True

    def require(self, name: str) -> None:
        if not getattr(self, name):
            pytest.skip(f"the backend declares no support for {name!r} (Capabilities.{name}=False)")


class ResultsFactory(Protocol):
    """Builds an empty, connected results store.

    ``expiry`` is its retention in seconds; ``list_limit`` the most ids each of its success and
    failed lists keeps (``None``: the store's default; only passed when ``count_retention``).
    """

    def __call__(self, *, expiry: float | None = 60.0, list_limit: int | None = None) -> Awaitable[Results]: ...


class BrokerFixture:
    """The ``broker`` fixture a backend's suite class overrides."""

    capabilities = Capabilities()

    @pytest.fixture
    def broker(self) -> Broker:
        """Yield an empty, connected broker with a short ``visibility_timeout`` (about 1 s)."""
        msg = "override the `broker` fixture: yield an empty, connected broker with visibility_timeout ~1s"
        raise NotImplementedError(msg)


class ResultsFixtures:
    """The ``results_factory`` fixture a backend's suite class overrides, and ``results`` made by it."""

    capabilities = Capabilities()

    @pytest.fixture
    def results_factory(self) -> ResultsFactory:
        """Yield ``async make(*, expiry)`` building empty, connected stores; close them afterwards."""
        msg = "override the `results_factory` fixture: yield an async callable make(*, expiry) -> empty Results"
        raise NotImplementedError(msg)

    @pytest_asyncio.fixture
    async def results(self, results_factory: ResultsFactory) -> Results:
        return await results_factory()


@overload
async def eventually(check: Callable[[], Awaitable[T | None]], *, timeout: float = ..., every: float = ...) -> T: ...


@overload
async def eventually(check: Callable[[], T | None], *, timeout: float = ..., every: float = ...) -> T: ...
async def eventually(check: Callable[[], Any], *, timeout: float = 10.0, every: float = 0.02) -> Any:
    """Call ``check`` (sync or async) until it returns something truthy, and return that.

    Raises ``TimeoutError`` after ``timeout`` seconds. This is waiting on a condition: the
    short pause between checks only keeps the loop from spinning.
    """
    async with asyncio.timeout(timeout):
        while True:
            value = check()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return value
            await asyncio.sleep(every)


@contextlib.asynccontextmanager
async def running(server: Server) -> AsyncIterator[asyncio.Task[None]]:
    """Run ``server``'s worker in the background for the body of an ``async with``."""
    task = asyncio.create_task(server.start(handle_signals=False))
    await eventually(lambda: server.running_loop is not None or task.done())
    if task.done():
        task.result()  # raise what start() raised
    try:
        yield task
    finally:
        await server.stop()
        await task
