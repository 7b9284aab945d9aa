"""Graceful shutdown on SIGTERM/SIGINT in a real process running ``srv.run()``."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

WORKER = textwrap.dedent(
    """
    import asyncio, json, logging, sys
    from tasqueue import Server, Job, JobCtx, JobOpts

    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="log: %(message)s")

    grace = float(sys.argv[1])
    srv = Server(shutdown_timeout=grace, load_entrypoints=False)

    @srv.task("quick")
    async def quick(payload: bytes, ctx: JobCtx) -> bytes:
        return b"done"

    @srv.task("long")
    async def long(payload: bytes, ctx: JobCtx) -> bytes:
        print("started", flush=True)
        await asyncio.sleep(float(payload))
        return b"finished"

    ids = {}

    async def setup() -> None:
        ids["quick"] = await srv.enqueue(Job("quick", b""))
        ids["long"] = await srv.enqueue(Job("long", sys.argv[2].encode(), JobOpts(max_retries=3),
                                            on_success=(Job("quick", b""),)))

    asyncio.run(setup())
    srv.run()  # returns after SIGTERM/SIGINT and a graceful stop

    async def report() -> None:
        out = {}
        for name, job_id in ids.items():
            m = await srv.get_job(job_id)
            out[name] = {"status": str(m.status), "retried": m.retried, "released": m.released,
                         "children": m.on_success_ids}
        out["pending"] = [m.id for m in await srv.get_pending()]
        out["long_id"] = ids["long"]
        print(json.dumps(out), flush=True)

    asyncio.run(report())
    """
)


def read_until(proc: subprocess.Popen[str], text: str) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        if text in line:
            return
    pytest.fail(f"the worker exited before printing {text!r}")


def run_worker(tmp_path: Path, *, grace: float, work_seconds: float, signals: list[signal.Signals]) -> dict[str, object]:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(grace), str(work_seconds)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    read_until(proc, "started")  # the long job runs
    for n, sig in enumerate(signals):
        proc.send_signal(sig)
        if n + 1 < len(signals):
            # Signals of one kind sent back to back may merge into one: wait until it was seen.
            read_until(proc, "finishing running jobs")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    report: dict[str, object] = json.loads(out.strip().splitlines()[-1])
    return report


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_job_cut_short_is_handed_back_not_marked_successful(tmp_path: Path, sig: signal.Signals) -> None:
    report = run_worker(tmp_path, grace=0.3, work_seconds=60, signals=[sig])
    assert report["quick"] == {"status": "successful", "retried": 0, "released": 0, "children": []}
    # Cut short: queued again, no retry counted, no on_success job, waiting on the queue.
    assert report["long"] == {"status": "queued", "retried": 0, "released": 1, "children": []}
    assert report["pending"] == [report["long_id"]]


def test_a_job_that_finishes_within_the_grace_period_completes(tmp_path: Path) -> None:
    report = run_worker(tmp_path, grace=30, work_seconds=0.5, signals=[signal.SIGTERM])
    long = report["long"]
    assert isinstance(long, dict)
    assert long["status"] == "successful" and long["released"] == 0 and len(long["children"]) == 1


def test_a_second_signal_skips_the_grace_period(tmp_path: Path) -> None:
    report = run_worker(tmp_path, grace=600, work_seconds=600, signals=[signal.SIGTERM, signal.SIGTERM])
    assert report["long"] == {"status": "queued", "retried": 0, "released": 1, "children": []}
