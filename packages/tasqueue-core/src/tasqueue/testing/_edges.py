"""Rules found by trying backends adversarially, that every backend must keep.

Mixed into ``BrokerSuite`` and ``ServerSuite``, so a backend passing the kit keeps them without
a subclass of its own. Where a rule is about a failure the backend cannot be made to have on
demand (a broker that stops answering, one that fails half-way through a publish), the test
wraps the real backend in a thin shim that fails in that way, and checks what the core and the
backend do around it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tasqueue._worker import STOP_BOUND
from tasqueue.broker import PENDING_LIMIT, Broker, Delivery, Envelope
from tasqueue.errors import ConfigurationError, EnqueueError, NotFoundError
from tasqueue.jobs import Job, JobOpts
from tasqueue.messages import JobStatus
from tasqueue.results import Results
from tasqueue.server import Server
from tasqueue.tasks import JobCtx
from tasqueue.testing._common import ResultsFactory, eventually, running

Q = "tasqueue:conformance"

#: Queue names that some backend's key or subject syntax gives a meaning to.
ODD_QUEUE_NAMES = ("}starts-with-a-brace", "a{b}c", "with space", "dots.and>stars*", "ünïcødé", "x" * 200)


class BrokerEdges:
    """Broker rules: any queue name works or is refused at once; listing is bounded."""

    async def test_odd_queue_names_work_or_are_refused_at_once(self, broker: Broker) -> None:
        for name in ODD_QUEUE_NAMES:
            refused: ConfigurationError | None = None
            try:
                await broker.enqueue(name, [Envelope("odd", name.encode())])
            except ConfigurationError as exc:
                refused = exc
            if refused is not None:
                assert name[:20] in str(refused), "a refusal must name the queue"
                with pytest.raises(ConfigurationError):
                    await broker.fetch(name, 1, timeout=0.1)
                continue
            got: list[Delivery] = []
            async with asyncio.timeout(5):
                while not got:
                    got = await broker.fetch(name, 1, timeout=5)
            assert [(d.id, d.data) for d in got] == [("odd", name.encode())]
            await broker.ack(name, got)
            assert await broker.get_pending(name) == []

    async def test_pending_reads_a_bounded_page_of_the_oldest(self, broker: Broker) -> None:
        n = PENDING_LIMIT + 300
        await broker.enqueue(Q, [Envelope(f"id-{i}", b"%d" % i) for i in range(n)])
        assert await broker.get_pending(Q) == [b"%d" % i for i in range(PENDING_LIMIT)]


class _Wrapped:
    """A real broker, passed through; subclasses change what one fault changes."""

    def __init__(self, inner: Broker) -> None:
        self._inner = inner

    @property
    def visibility_timeout(self) -> float:
        return self._inner.visibility_timeout

    @property
    def process_local(self) -> bool:
        return bool(getattr(self._inner, "process_local", False))

    async def enqueue(self, queue: str, envelopes: Sequence[Envelope]) -> None:
        await self._inner.enqueue(queue, envelopes)

    async def fetch(self, queue: str, max_count: int, *, timeout: float) -> list[Delivery]:
        return await self._inner.fetch(queue, max_count, timeout=timeout)

    async def ack(self, queue: str, deliveries: Sequence[Delivery]) -> None:
        await self._inner.ack(queue, deliveries)

    async def nack(self, queue: str, delivery: Delivery, *, data: bytes | None = None, delay: float = 0.0) -> None:
        await self._inner.nack(queue, delivery, data=data, delay=delay)

    async def extend(self, queue: str, deliveries: Sequence[Delivery]) -> list[Delivery]:
        return await self._inner.extend(queue, deliveries)

    async def get_pending(self, queue: str) -> list[bytes]:
        return await self._inner.get_pending(queue)

    async def close(self) -> None:
        return None  # the backend's fixture closes the real one


class _FailingOn(_Wrapped):
    """Its ``enqueue`` to one queue fails, as a broker that dies in the middle of a publish."""

    def __init__(self, inner: Broker, queue: str) -> None:
        super().__init__(inner)
        self._queue = queue

    async def enqueue(self, queue: str, envelopes: Sequence[Envelope]) -> None:
        if queue == self._queue:
            msg = "connection lost"
            raise ConnectionError(msg)
        await self._inner.enqueue(queue, envelopes)


class _Silent(_Wrapped):
    """Once ``silent`` is set, it never answers a fetch, a settle or a renewal."""

    def __init__(self, inner: Broker) -> None:
        super().__init__(inner)
        self.silent = False

    async def _answer(self) -> None:
        if self.silent:
            await asyncio.Event().wait()

    async def fetch(self, queue: str, max_count: int, *, timeout: float) -> list[Delivery]:
        await self._answer()
        return await self._inner.fetch(queue, max_count, timeout=timeout)

    async def ack(self, queue: str, deliveries: Sequence[Delivery]) -> None:
        await self._answer()
        await self._inner.ack(queue, deliveries)

    async def nack(self, queue: str, delivery: Delivery, *, data: bytes | None = None, delay: float = 0.0) -> None:
        await self._answer()
        await self._inner.nack(queue, delivery, data=data, delay=delay)

    async def extend(self, queue: str, deliveries: Sequence[Delivery]) -> list[Delivery]:
        await self._answer()
        return await self._inner.extend(queue, deliveries)


class ServerEdges:
    """Server rules over the backend: records outlive long delays, a half-published batch says
    what landed, a stop is bounded however the broker behaves."""

    capabilities: Any

    async def test_a_job_due_after_the_store_expiry_keeps_its_record(
        self, broker: Broker, results_factory: ResultsFactory
    ) -> None:
        self.capabilities.require("delayed")
        self.capabilities.require("expiry")
        store = await results_factory(expiry=0.5)
        srv = Server(broker, store, load_entrypoints=False)

        @srv.task("later")
        async def later(payload: bytes, ctx: JobCtx) -> None:
            return None

        job_id = await srv.enqueue(Job("later", b"", JobOpts(eta=datetime.now(UTC) + timedelta(seconds=1.5))))
        await asyncio.sleep(1.0)  # the fault itself: time passes beyond the store's expiry, not the eta
        assert (await srv.get_job(job_id)).status is JobStatus.QUEUED
        async with running(srv):
            assert (await srv.wait(job_id, timeout=10)).status is JobStatus.SUCCESSFUL

    async def test_a_half_published_enqueue_says_which_jobs_landed(self, broker: Broker, results: Results) -> None:
        srv = Server(_FailingOn(broker, "second"), results, load_entrypoints=False)
        ran: list[str] = []

        @srv.task("first", queue="first")
        async def first(payload: bytes, ctx: JobCtx) -> None:
            ran.append(ctx.meta.id)

        jobs = [Job("first", b"", JobOpts(queue="first")) for _ in range(3)]
        jobs += [Job("first", b"", JobOpts(queue="second", id=f"second-{n}")) for n in range(2)]
        with pytest.raises(EnqueueError, match="published 3 of 5") as caught:
            await srv.enqueue_many(jobs)
        landed = caught.value.enqueued
        assert len(landed) == 3 and caught.value.not_enqueued == ("second-0", "second-1")
        for job_id in landed:
            assert (await srv.get_job(job_id)).status is JobStatus.QUEUED
        with pytest.raises(NotFoundError):
            await srv.get_job("second-0")
        async with running(srv):
            for job_id in landed:
                assert (await srv.wait(job_id, timeout=10)).status is JobStatus.SUCCESSFUL
        assert sorted(ran) == sorted(landed)

    async def test_stop_is_bounded_when_the_broker_stops_answering(self, broker: Broker, results: Results) -> None:
        silent = _Silent(broker)
        srv = Server(silent, results, load_entrypoints=False, shutdown_timeout=0.3)
        started: list[str] = []

        @srv.task("hold", concurrency=2)
        async def hold(payload: bytes, ctx: JobCtx) -> None:
            started.append(ctx.meta.id)
            await asyncio.Event().wait()

        await srv.enqueue_many([Job("hold", b"") for _ in range(6)])
        async with running(srv) as task:
            await eventually(lambda: len(started) >= 2)
            silent.silent = True
            loop = asyncio.get_running_loop()
            began = loop.time()
            async with asyncio.timeout(0.3 + STOP_BOUND + 3.0):
                await srv.stop()
                await task
            assert loop.time() - began < 0.3 + STOP_BOUND + 3.0
