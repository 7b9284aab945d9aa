"""Synchronous programs use a Server through ``srv.sync`` without writing asyncio code."""

from __future__ import annotations

import asyncio
import threading

import pytest

from tasqueue import Chain, Group, Job, JobCtx, JobStatus, NotFoundError, Server
from tasqueue.testing import running


def test_plain_sync_code_enqueues_and_reads_back() -> None:
    srv = Server(load_entrypoints=False)
    job_id = srv.sync.enqueue(Job("t", b"payload"))
    assert srv.sync.get_job(job_id).status is JobStatus.QUEUED
    assert [m.id for m in srv.sync.get_pending()] == [job_id]
    assert srv.sync.enqueue_many([Job("t", b"1"), Job("t", b"2")])
    group_id = srv.sync.enqueue_group(Group([Job("t", b"")]))
    assert srv.sync.get_group(group_id).status is JobStatus.PROCESSING
    chain_id = srv.sync.enqueue_chain(Chain([Job("t", b""), Job("t", b"")]))
    assert srv.sync.get_chain(chain_id).status is JobStatus.QUEUED
    with pytest.raises(NotFoundError):
        srv.sync.get_result(job_id)
    srv.sync.delete_job(job_id)
    with pytest.raises(NotFoundError):
        srv.sync.get_job(job_id)
    assert srv.sync.get_success() == [] and srv.sync.get_failed() == []
    srv.sync.close()


@pytest.mark.asyncio
async def test_a_thread_enqueues_onto_a_running_worker() -> None:
    srv = Server(load_entrypoints=False)

    @srv.task("double")
    async def double(payload: bytes, ctx: JobCtx) -> bytes:
        return payload * 2

    results: list[bytes] = []

    def producer() -> None:  # e.g. a web view in a thread pool
        job_id = srv.sync.enqueue(Job("double", b"ab"))
        srv.sync.wait(job_id, timeout=10)
        results.append(srv.sync.get_result(job_id))

    async with running(srv):
        thread = threading.Thread(target=producer)
        thread.start()
        await asyncio.to_thread(thread.join, 20)
    assert results == [b"abab"]


@pytest.mark.asyncio
async def test_blocking_calls_on_the_loop_itself_are_refused() -> None:
    srv = Server(load_entrypoints=False)

    @srv.task("t")
    async def t(payload: bytes, ctx: JobCtx) -> None:
        return None

    async with running(srv):
        with pytest.raises(RuntimeError, match="await the Server's methods instead"):
            srv.sync.get_success()
