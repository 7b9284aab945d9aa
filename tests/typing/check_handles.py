"""Checked by mypy (``nox -s typecheck``), never run: what the types of task handles promise.

Each wrong call carries a ``# type: ignore[<code>]``. mypy runs with ``warn_unused_ignores``
(part of ``strict``), so if a handle ever stopped rejecting one of them, the ignore would be
unused and the typecheck session would fail.
"""

from __future__ import annotations

from typing import assert_type

import msgspec

from tasqueue import Job, JobCtx, Server, TaskHandle

srv = Server()


class AddArgs(msgspec.Struct):
    a: int
    b: int


@srv.task(queue="math", max_retries=3)
async def add(args: AddArgs) -> int:
    return args.a + args.b


@srv.task
def scale(factor: float, ctx: JobCtx) -> list[float]:
    return [factor]


@srv.task("raw")
async def raw(payload: bytes, ctx: JobCtx) -> bytes:
    return payload


async def uses() -> None:
    assert_type(add, TaskHandle[AddArgs, int])
    assert_type(scale, TaskHandle[float, list[float]])
    assert_type(raw, TaskHandle[bytes, bytes])

    job_id = await add.enqueue(AddArgs(a=1, b=2), max_retries=1, timeout=5)
    assert_type(job_id, str)
    assert_type(await add.result(job_id, timeout=10), int)
    assert_type(await scale.result(await scale.enqueue(2.0)), list[float])
    assert_type(add.job(AddArgs(a=1, b=2)), Job)

    await add.enqueue(3)  # type: ignore[arg-type]
    await add.enqueue({"a": 1, "b": 2})  # type: ignore[arg-type]
    await raw.enqueue("text")  # type: ignore[arg-type]
    add.job(AddArgs(a=1, b=2), max_retries="3")  # type: ignore[arg-type]
    await add.enqueue(AddArgs(a=1, b=2), queue_name="q")  # type: ignore[call-arg]
    wrong: str = await add.result(job_id)  # type: ignore[assignment]
    del wrong
