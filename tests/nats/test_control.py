"""The NATS control plane beyond the kit: what JetStream itself does to the messages it counts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tasqueue import Inspector, Job, JobCtx, JobOpts, JobStatus, Server
from tasqueue.broker import Envelope
from tasqueue.results import Results
from tasqueue.testing import ResultsFactory, eventually, running
from tasqueue_nats import NatsBroker


@pytest.mark.asyncio
async def test_a_delayed_job_leaves_the_counts_once_it_ran(nats_broker: NatsBroker, nats_results_factory: ResultsFactory) -> None:
    # On 2.12+ the server fires the schedule holder itself; the count must not keep it.
    results: Results = await nats_results_factory()
    srv = Server(nats_broker, results, load_entrypoints=False, fetch_timeout=0.2, shutdown_timeout=0.5)

    @srv.task("soon", queue="dl")
    async def soon(payload: bytes, ctx: JobCtx) -> None:
        return None

    job_id = await srv.enqueue(Job("soon", b"", JobOpts(queue="dl", eta=datetime.now(UTC) + timedelta(seconds=1))))
    insp = Inspector(srv)
    assert (await insp.queue("dl")).counts.delayed == 1
    async with running(srv):
        assert (await srv.wait(job_id, timeout=15)).status is JobStatus.SUCCESSFUL

        async def settled() -> bool:
            c = (await insp.queue("dl")).counts
            return (c.delayed, c.queued, c.running, c.successful, c.total_successful) == (0, 0, 0, 1, 1)

        await eventually(settled)


@pytest.mark.asyncio
async def test_an_id_enqueued_again_after_its_message_is_gone_lands(nats_broker: NatsBroker) -> None:
    # JetStream remembers ids for duplicate_window after the message is acked; an id the broker
    # no longer holds is accepted again (the Inspector's retry of a failed job relies on it).
    await nats_broker.enqueue("again", [Envelope("one", b"first")])
    (got,) = await nats_broker.fetch("again", 1, timeout=2)
    await nats_broker.ack("again", [got])
    await nats_broker.enqueue("again", [Envelope("one", b"second")])
    await nats_broker.enqueue("again", [Envelope("one", b"third, while held")])
    (again,) = await nats_broker.fetch("again", 5, timeout=2)
    assert (again.id, again.data) == ("one", b"second")
    await nats_broker.ack("again", [again])
    assert await nats_broker.fetch("again", 5, timeout=0.3) == []
    (counts,) = await nats_broker.control.counts(["again"])
    assert (counts.queued, counts.running) == (0, 0)
