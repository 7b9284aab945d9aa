"""tasqueue in one file: tasks, a job, a group, a chain, a retry and a failure, on memory://.

Run it with `python examples/quickstart.py`. The broker and the results store live inside this
process, so nothing else needs to be running. With `pip install tasqueue-redis`, give the Server
"redis://127.0.0.1:6379/0" instead and the same code runs across processes and machines.
Exits 0 when every job ended as expected, 1 otherwise.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys

from tasqueue import Backoff, Chain, ChainMessage, Group, Job, JobCtx, JobOpts, JobStatus, Server, TaskOpts

srv = Server(broker="memory://", results="memory://")


@srv.task("add")
async def add(payload: bytes, ctx: JobCtx) -> bytes:
    """Add two numbers; the bytes a handler returns are saved as the job's result."""
    args = json.loads(payload)  # payloads are bytes: encode them however you like
    return json.dumps(args["a"] + args["b"]).encode()


@srv.task("double")
async def double(payload: bytes, ctx: JobCtx) -> bytes:
    """Double a number: the payload's or, inside a chain, the previous job's result."""
    return json.dumps(2 * json.loads(ctx.meta.prev_job_result or payload)).encode()


async def flaky(payload: bytes, ctx: JobCtx) -> bytes:
    """Fail on the first run, succeed on the retry."""
    if ctx.meta.retried == 0:
        raise ConnectionError("the service is not up yet")
    return b"ok"


def on_retry(ctx: JobCtx, exc: BaseException) -> None:
    print(f"    flaky raised {exc!r}; retry {ctx.meta.retried + 1} of {ctx.meta.max_retry} is coming")


srv.register_task("flaky", flaky, TaskOpts(retrying_cb=on_retry))  # the non-decorator form


async def main() -> int:
    async with srv:  # closes the broker and the results store at the end
        worker = asyncio.create_task(srv.start())  # the worker, here in the same process

        job_id = await srv.enqueue(Job("add", b'{"a": 1, "b": 2}'))
        group_id = await srv.enqueue_group(Group([Job("double", b"1"), Job("double", b"2"), Job("double", b"3")]))
        chain_id = await srv.enqueue_chain(Chain([Job("add", b'{"a": 2, "b": 3}'), Job("double", b""), Job("double", b"")]))
        flaky_id = await srv.enqueue(Job("flaky", b"", JobOpts(max_retries=2, backoff=Backoff(initial=0.1))))
        broken_id = await srv.enqueue(Job("add", b"not json"))  # max_retries=0: fails for good

        job = await srv.wait(job_id, timeout=10)
        result = (await srv.get_result(job_id)).decode()
        check("job", job.status, f"result={result}", job.status is JobStatus.SUCCESSFUL and result == "3")

        for member in (await srv.get_group(group_id)).job_status:
            await srv.wait(member, timeout=10)
        group = await srv.get_group(group_id)
        results = [(await srv.get_result(member)).decode() for member in group.job_status]
        check("group", group.status, f"results={results}", group.status is JobStatus.SUCCESSFUL and results == ["2", "4", "6"])

        chain = await wait_chain(chain_id)
        last = (await srv.get_result(chain.job_id)).decode()
        detail = f"{len(chain.prev_jobs)} jobs, last result={last}"
        check("chain", chain.status, detail, chain.status is JobStatus.SUCCESSFUL and last == "20")

        retried = await srv.wait(flaky_id, timeout=10)
        detail = f"after {retried.retried} retry"
        check("retry", retried.status, detail, retried.status is JobStatus.SUCCESSFUL and retried.retried == 1)

        broken = await srv.wait(broken_id, timeout=10)
        check("broken", broken.status, f"prev_err={broken.prev_err!r}", broken.status is JobStatus.FAILED)

        await srv.stop()  # graceful: running jobs finish first
        await worker

    print("every job ended as expected" if all(checks) else "some jobs did NOT end as expected")
    return 0 if all(checks) else 1


async def wait_chain(chain_id: str) -> ChainMessage:
    """Wait for a chain's jobs in turn: a chain job's first ``on_success_ids`` entry is the next job."""
    job = await srv.wait((await srv.get_chain(chain_id)).job_id, timeout=10)
    while job.status is JobStatus.SUCCESSFUL and job.on_success_ids:
        job = await srv.wait(job.on_success_ids[0], timeout=10)
    return await srv.get_chain(chain_id)


checks: list[bool] = []


def check(what: str, status: str, detail: str, expected: bool) -> None:
    checks.append(expected)
    print(f"{'ok' if expected else 'UNEXPECTED'}  {what:<7}{status:<11}{detail}")


if __name__ == "__main__":
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")  # the worker logs failures at WARNING
    sys.exit(asyncio.run(main()))
