"""Typed tasks: handles, msgspec payloads and results, task defaults, awaited results, a schedule.

Run it with `python examples/typed.py` (memory://, nothing else needed). The same code runs
across processes with `Server("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0")`.
Exits 0 when everything came out as expected, 1 otherwise.
"""

from __future__ import annotations

import asyncio
import logging
import sys

import msgspec

from tasqueue import Group, JobCtx, JobFailedError, PayloadError, Server

srv = Server()


class Order(msgspec.Struct, frozen=True):
    """A payload type. New fields get defaults, so jobs already queued still decode."""

    id: int
    items: list[str]
    express: bool = False


class Receipt(msgspec.Struct, frozen=True):
    order_id: int
    count: int


@srv.task(queue="orders", max_retries=3, timeout=30)  # defaults for every job of the task
async def pack(order: Order) -> Receipt:
    """A typed handler: gets an Order, returns a Receipt; no bytes in sight."""
    if not order.items:
        raise ValueError(f"order {order.id} is empty")
    return Receipt(order_id=order.id, count=len(order.items))


@srv.task(queue="orders")
def weigh(items: list[str], ctx: JobCtx) -> float:
    """A sync handler (it runs in a thread pool); ``ctx`` is optional for typed handlers."""
    return 0.5 * len(items)


@srv.task(schedule="0 3 * * *")  # declared: once per tick, however many workers start
async def nightly_report(day: str = "yesterday") -> None:
    print(f"    report for {day}")


async def main() -> int:
    async with srv, asyncio.TaskGroup() as tg:
        tg.create_task(srv.start(handle_signals=False))  # the worker, here in the same process

        job_id = await pack.enqueue(Order(id=1, items=["tea", "cups"]))
        receipt = await pack.result(job_id, timeout=10)  # a Receipt, awaited without polling
        check("typed result", receipt == Receipt(order_id=1, count=2), repr(receipt))

        empty = await pack.enqueue(Order(id=2, items=[]), max_retries=0)  # a job overrides a default
        try:
            await pack.result(empty, timeout=10)
        except JobFailedError as exc:
            check("failure", exc.error_type == "ValueError", f"{exc.error_type}: {exc.error} (job {exc.job_id[:8]})")

        try:
            await pack.enqueue(Order(id="three", items=[]))  # type: ignore[arg-type]  # mypy says so too
        except PayloadError as exc:
            check("refused", "Expected `int`, got `str` - at `$.id`" in str(exc), str(exc))

        # handle.job() builds plain Jobs for groups, chains and enqueue_many.
        group_id = await srv.enqueue_group(Group([weigh.job(["a"]), weigh.job(["a", "b", "c"])]))
        weights = [await weigh.result(i, timeout=10) for i in (await srv.get_group(group_id)).job_status]
        check("group", weights == [0.5, 1.5], f"weights={weights}")

        await srv.stop()

    print("everything came out as expected" if all(checks) else "something did NOT come out as expected")
    return 0 if all(checks) else 1


checks: list[bool] = []


def check(what: str, ok: bool, detail: str) -> None:
    checks.append(ok)
    print(f"{'ok' if ok else 'UNEXPECTED'}  {what:<13}{detail}")


if __name__ == "__main__":
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.ERROR)
    sys.exit(asyncio.run(main()))
