"""A worker process for the NATS fault tests: ``python fault_worker.py --url ... --ledger DIR ...``.

Its one task, ``work``, sleeps for the number of seconds in its payload (the job's "effect"),
then appends ``<job id> <pid> <stalls> <time>`` to ``DIR/<pid>.log`` with a single ``os.write``
on an ``O_APPEND`` descriptor: the ledger, independent of NATS, survives a SIGKILL of this
process, and tells the test which jobs ran, how often, and where.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import time

from tasqueue import JobCtx, Server, TaskOpts
from tasqueue_nats import NatsBroker, NatsResults


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--queue", default="faults")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--vt", type=float, default=3.0)
    parser.add_argument("--ledger", required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {os.getpid()} %(levelname)s %(name)s: %(message)s")

    ledger = os.open(os.path.join(args.ledger, f"{os.getpid()}.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    broker = NatsBroker(args.url, prefix=args.prefix, visibility_timeout=args.vt)
    results = NatsResults(args.url, prefix=args.prefix)
    srv = Server(broker, results, load_entrypoints=False, shutdown_timeout=5.0)

    async def work(payload: bytes, ctx: JobCtx) -> bytes:
        await asyncio.sleep(float(payload or b"0"))
        os.write(ledger, f"{ctx.meta.id} {os.getpid()} {ctx.meta.stalls} {time.time():.6f}\n".encode())
        return b"done"

    srv.register_task("work", work, TaskOpts(queue=args.queue, concurrency=args.concurrency))
    srv.run()


if __name__ == "__main__":
    main()
