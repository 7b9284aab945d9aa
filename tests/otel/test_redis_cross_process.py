"""Across two OS processes on a real Redis: the worker's run is part of the producer's trace."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

pytest.importorskip(
    "tasqueue_redis", reason="the cross-process test needs the tasqueue-redis backend (pip install tasqueue-redis)"
)

ROLES = Path(__file__).with_name("_roles.py")


def read_spans(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_the_worker_process_continues_the_producer_process_trace(redis_server, tmp_path: Path) -> None:
    url = f"{redis_server.url}?prefix=otel-{uuid.uuid4().hex[:8]}"
    queue = "billing"
    producer_spans, worker_spans = tmp_path / "producer.jsonl", tmp_path / "worker.jsonl"

    # The worker first, idle until the job arrives; then the producer, in a process of its own.
    worker = subprocess.Popen([sys.executable, str(ROLES), "worker", url, str(worker_spans), queue])
    try:
        produced = subprocess.run(
            [sys.executable, str(ROLES), "producer", url, str(producer_spans), queue],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert worker.wait(timeout=60) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    sent = json.loads(produced.stdout.strip().splitlines()[-1])

    spans = {s["name"]: s for s in read_spans(producer_spans)}
    request, send = spans["POST /orders"], spans["send billing"]
    assert send["kind"] == "SpanKind.PRODUCER"
    assert send["parent_id"] == request["context"]["span_id"]
    assert send["attributes"]["messaging.message.id"] == sent["job_id"]
    assert send["resource"]["attributes"]["service.name"] == "shop-api"

    spans = {s["name"]: s for s in read_spans(worker_spans)}
    run, user = spans["process billing"], spans["charge card"]
    assert run["resource"]["attributes"]["service.name"] == "billing-worker"
    assert run["kind"] == "SpanKind.CONSUMER"
    assert run["context"]["trace_id"] == sent["trace_id"] == request["context"]["trace_id"]
    assert run["parent_id"] == send["context"]["span_id"]
    assert run["attributes"]["messaging.message.id"] == sent["job_id"]
    assert run["attributes"]["messaging.destination.name"] == "billing"
    assert run["attributes"]["tasqueue.job.outcome"] == "success"
    assert user["context"]["trace_id"] == sent["trace_id"]
    assert user["parent_id"] == run["context"]["span_id"]
