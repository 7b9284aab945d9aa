"""The public surface: one sorted ``__all__``, typed packages, stable wire types."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import msgspec

import tasqueue
from tasqueue import DEFAULT_QUEUE, Job, JobMessage, JobOpts, JobStatus, Meta
from tasqueue._codec import decode_job, encode


def test_all_is_sorted_and_importable() -> None:
    # isort style, as ruff keeps it: CONSTANTS, then Classes, then functions
    def kind(name: str) -> tuple[int, str]:
        return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)

    assert tasqueue.__all__ == sorted(tasqueue.__all__, key=kind)
    for name in tasqueue.__all__:
        assert getattr(tasqueue, name) is not None


def test_design_names_are_exported() -> None:
    wanted = {
        "Server", "Job", "JobOpts", "TaskOpts", "JobCtx", "Group", "GroupOpts", "Chain", "ChainOpts",
        "JobMessage", "Meta", "GroupMessage", "ChainMessage", "NotFoundError", "DEFAULT_QUEUE", "hookimpl",
    }  # fmt: skip
    assert wanted <= set(tasqueue.__all__)
    assert DEFAULT_QUEUE == "tasqueue:tasks"
    assert issubclass(tasqueue.NotFoundError, KeyError)


def test_version_is_read_from_the_installed_metadata() -> None:
    assert tasqueue.__version__ == "0.1.0"


def test_the_package_is_typed() -> None:
    assert (Path(tasqueue.__file__).parent / "py.typed").exists()


def test_statuses_are_the_go_strings() -> None:
    assert [s.value for s in JobStatus] == ["queued", "processing", "retrying", "failed", "successful"]


def test_meta_and_job_message_have_the_design_fields() -> None:
    design = [
        "id",
        "on_success_ids",
        "status",
        "queue",
        "schedule",
        "max_retry",
        "retried",
        "prev_err",
        "processed_at",
        "prev_job_result",
    ]
    assert list(Meta.__struct_fields__[: len(design)]) == design
    assert {"job", "headers"} <= set(JobMessage.__struct_fields__)
    assert issubclass(JobMessage, Meta)


def test_a_job_message_round_trips_through_msgpack() -> None:
    msg = JobMessage(
        id="1",
        job=Job(
            "t",
            b"\x00\xff",
            JobOpts(eta=datetime(2030, 1, 1, tzinfo=UTC), timeout=1.5, max_retries=2),
            on_success=(Job("n", b""),),
        ),
        headers={"traceparent": "00-abc-def-01"},
        prev_job_result=b"prev",
    )
    data = encode(msg)
    assert decode_job(data) == msg
    assert msgspec.msgpack.decode(data)["job"]["payload"] == b"\x00\xff"  # payloads stay raw bytes


def test_readers_ignore_fields_from_newer_writers() -> None:
    newer = msgspec.msgpack.encode({"id": "1", "job": {"task": "t", "payload": b""}, "priority": 9, "status": "retrying"})
    decoded = decode_job(newer)
    assert (decoded.id, decoded.status, decoded.job.task) == ("1", JobStatus.RETRYING, "t")


def test_defaults_are_left_out_of_the_wire() -> None:
    small = encode(JobMessage(id="1", job=Job("t", b"")))
    assert set(msgspec.msgpack.decode(small)) == {"id", "job"}
