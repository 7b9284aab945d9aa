"""The ``tasqueue`` command.

Inspection commands run in this process through ``main(argv)`` against ``memory://<name>``,
which a Server built here (and kept alive for the test) shares with the one the command builds.
The worker command runs in a subprocess, the way an operator starts it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tasqueue import Job, JobCtx, JobOpts, Server
from tasqueue.cli import load_server, main
from tasqueue.testing import running


@pytest.fixture
def url() -> str:
    return f"memory://cli-{uuid.uuid4().hex}"


@pytest.fixture
def srv(url: str) -> Iterator[Server]:
    """A Server on memory://<name>: the command's own Server sees the same broker and store."""
    server = Server(url, url, load_entrypoints=False)

    @server.task("echo")
    async def echo(payload: bytes, ctx: JobCtx) -> bytes:
        return payload

    @server.task("boom")
    async def boom(payload: bytes, ctx: JobCtx) -> None:
        raise RuntimeError("boom")

    yield server
    asyncio.run(server.close())


def run_jobs(server: Server, *jobs: Job) -> list[str]:
    """Enqueue ``jobs``, run the worker until each has finished, and return their ids."""

    async def go() -> list[str]:
        ids = [await server.enqueue(job) for job in jobs]
        async with running(server):
            for job_id in ids:
                await server.wait(job_id, timeout=10)
        return ids

    return asyncio.run(go())


@pytest.fixture
def app_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A current directory for app modules; ``load_server`` puts it on a sys.path restored afterwards."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    return tmp_path


def cli(*argv: str) -> int:
    return main(list(argv))


def test_job_prints_the_message_as_json(srv: Server, url: str, capsys: pytest.CaptureFixture[str]) -> None:
    (job_id,) = run_jobs(srv, Job("echo", b'{"hello": "world"}', JobOpts(max_retries=2)))
    assert cli("job", job_id, "--json", "--broker", url, "--results", url) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["id"] == job_id
    assert shown["status"] == "successful"
    assert shown["state"] == "successful"
    assert shown["max_retry"] == 2
    assert shown["retried"] == 0
    assert shown["job"]["task"] == "echo"
    assert shown["job"]["payload"] == '{"hello": "world"}'  # readable text stays text
    assert shown["job"]["opts"]["max_retries"] == 2
    assert (shown["payload_size"], shown["payload_truncated"], shown["result_size"]) == (18, False, 18)


def test_job_shows_binary_and_control_bytes_as_base64(srv: Server, url: str, capsys: pytest.CaptureFixture[str]) -> None:
    binary = b"\x00\xff\xfe raw"
    escape = b"\x1b]0;pwned\x07"  # valid UTF-8, but would drive the terminal
    ids = asyncio.run(_enqueue(srv, Job("echo", binary), Job("echo", escape)))
    for job_id, payload in zip(ids, (binary, escape), strict=True):
        assert cli("job", job_id, "--json", "--results", url) == 0
        shown = json.loads(capsys.readouterr().out)
        assert shown["status"] == "queued"
        assert shown["job"]["payload"] == {"base64": base64.b64encode(payload).decode()}
        assert cli("job", job_id, "--results", url) == 0
        assert "\x1b" not in capsys.readouterr().out  # nor in the text view


def test_a_big_payload_shows_as_a_preview_with_its_size(srv: Server, url: str, capsys: pytest.CaptureFixture[str]) -> None:
    big = b"x" * 3_000_000
    (job_id,) = asyncio.run(_enqueue(srv, Job("echo", big)))
    assert cli("job", job_id, "--results", url) == 0
    shown = capsys.readouterr().out
    assert len(shown) < 5000
    assert "3.0 MB" in shown and "--full" in shown
    assert cli("job", job_id, "--json", "--results", url) == 0
    doc = json.loads(capsys.readouterr().out)
    assert (doc["payload_size"], doc["payload_truncated"], len(doc["job"]["payload"])) == (3_000_000, True, 1024)
    assert cli("job", job_id, "--json", "--full", "--results", url) == 0
    assert json.loads(capsys.readouterr().out)["job"]["payload"] == big.decode()


def test_payload_writes_the_raw_bytes(srv: Server, url: str, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    payload = bytes(range(256)) * 10
    (job_id,) = asyncio.run(_enqueue(srv, Job("echo", payload)))
    assert cli("payload", job_id, "--results", url) == 0
    assert capsysbinary.readouterr().out == payload


async def _enqueue(server: Server, *jobs: Job) -> list[str]:
    return [await server.enqueue(job) for job in jobs]


def test_result_writes_the_raw_bytes(srv: Server, url: str, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    payload = b"\x00\x01binary\xff"
    (job_id,) = run_jobs(srv, Job("echo", payload))
    assert cli("result", job_id, "--results", url) == 0
    assert capsysbinary.readouterr().out == payload
    assert cli("result", job_id, "--json", "--results", url) == 0
    assert json.loads(capsysbinary.readouterr().out) == {
        "id": job_id,
        "size": len(payload),
        "result": {"base64": base64.b64encode(payload).decode()},
    }


def test_jobs_lists_a_queue_in_a_state(srv: Server, url: str, capsys: pytest.CaptureFixture[str]) -> None:
    first, second = asyncio.run(_enqueue(srv, Job("echo", b"1"), Job("echo", b"2")))
    (other,) = asyncio.run(_enqueue(srv, Job("echo", b"3", JobOpts(queue="other"))))

    assert cli("jobs", "--oldest", "--broker", url) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["ID", "TASK", "STATUS", "RETRIED"]
    assert [line.split()[:4] for line in lines[1:]] == [[first, "echo", "queued", "0/0"], [second, "echo", "queued", "0/0"]]

    assert cli("jobs", "--queue", "other", "--json", "--broker", url) == 0
    page = json.loads(capsys.readouterr().out)
    assert [j["id"] for j in page["jobs"]] == [other]
    assert page["cursor"] is None

    assert cli("jobs", "--limit", "1", "--json", "--broker", url) == 0
    captured = capsys.readouterr()
    page = json.loads(captured.out)
    assert [j["id"] for j in page["jobs"]] == [second]  # newest first
    assert cli("jobs", "--limit", "1", "--cursor", page["cursor"], "--json", "--broker", url) == 0
    assert [j["id"] for j in json.loads(capsys.readouterr().out)["jobs"]] == [first]


def test_queues_counts_and_failed_jobs_list(srv: Server, url: str, capsys: pytest.CaptureFixture[str]) -> None:
    bad = run_jobs(srv, Job("echo", b""), Job("boom", b""))[1]
    assert cli("queues", "--json", "--broker", url) == 0
    (queue,) = json.loads(capsys.readouterr().out)
    assert queue["name"] == "tasqueue:tasks"
    assert (queue["counts"]["successful"], queue["counts"]["failed"], queue["paused"]) == (1, 1, False)
    assert cli("jobs", "--state", "failed", "--broker", url) == 0
    (row,) = capsys.readouterr().out.splitlines()[1:]
    assert row.startswith(bad) and "RuntimeError: boom" in row


def test_urls_come_from_the_environment(
    srv: Server, url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (job_id,) = run_jobs(srv, Job("echo", b""))
    monkeypatch.setenv("TASQUEUE_BROKER", url)
    monkeypatch.setenv("TASQUEUE_RESULTS", url)
    assert cli("jobs", "--state", "successful", "--json") == 0
    assert [j["id"] for j in json.loads(capsys.readouterr().out)["jobs"]] == [job_id]


def test_a_missing_job_is_one_line_and_exit_3(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("job", "no-such-job", "--results", url) == 3
    err = capsys.readouterr().err
    assert err == "tasqueue: error: job 'no-such-job' not found (never enqueued, expired, or deleted)\n"
    assert cli("result", "no-such-job", "--results", url) == 3
    assert "no result for job 'no-such-job'" in capsys.readouterr().err


def test_an_unknown_scheme_names_the_installed_ones(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("queues", "--broker", "bogus://somewhere") == 1
    err = capsys.readouterr().err
    assert err.startswith("tasqueue: error: no broker registered for 'bogus://' (installed: ")
    assert "memory://" in err
    assert "Traceback" not in err


def test_a_well_known_scheme_says_what_to_install(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASQUEUE_DISABLE_PLUGINS", "redis")  # as if tasqueue-redis were not installed
    assert cli("queues", "--broker", "redis://127.0.0.1:1/0") == 1
    assert "pip install tasqueue-redis" in capsys.readouterr().err


def test_bare_memory_url_gets_a_note(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("queues", "--json", "--broker", "memory://") == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == []
    assert "lives inside one process" in captured.err


def test_help_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli("worker", "--help")
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "module:attribute" in out
    assert "SIGTERM" in out
    assert "--processes" in out
    with pytest.raises(SystemExit) as exit_:
        cli("--version")
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith("tasqueue 0.1.0\n")
    with pytest.raises(SystemExit):
        cli("--help")
    listing = capsys.readouterr().out
    for command in ("worker", "queues", "jobs", "job", "payload", "result", "retry", "run-now", "delete", "purge",
                    "pause", "resume", "workers", "schedules", "enqueue", "top", "plugins"):  # fmt: skip
        line = next((ln for ln in listing.splitlines() if ln.strip().startswith(command + " ")), None)
        assert (line is not None and len(line.split()) > 1) or f"    {command}\n" in listing, command


def test_plugins_lists_the_built_in_backend(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("plugins", "--json") == 0
    found = {p["name"]: p for p in json.loads(capsys.readouterr().out)}
    assert found["memory"]["package"] == "tasqueue-core"
    assert found["memory"]["schemes"] == ["memory"]
    assert "tasqueue_register_brokers" in found["memory"]["hooks"]


def test_enqueue_then_act_on_jobs(srv: Server, url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("enqueue", "echo", "hi", "--queue", "q9", "--retries", "2", "--broker", url) == 0
    job_id = capsys.readouterr().out.strip()
    message = asyncio.run(srv.get_job(job_id))
    assert (message.job.task, message.job.payload, message.queue, message.max_retry) == ("echo", b"hi", "q9", 2)
    assert cli("enqueue", "echo", "later", "--queue", "q9", "--delay", "3600", "--json", "--broker", url) == 0
    later = json.loads(capsys.readouterr().out)["id"]
    assert cli("run-now", later, "--broker", url) == 0
    assert "made ready 1 of 1" in capsys.readouterr().out
    assert cli("pause", "q9", "--broker", url) == 0
    assert capsys.readouterr().out.startswith("paused q9")
    assert cli("queues", "--json", "--broker", url) == 0
    (q9,) = [q for q in json.loads(capsys.readouterr().out) if q["name"] == "q9"]
    assert (q9["paused"], q9["counts"]["queued"]) == (True, 2)
    assert cli("resume", "q9", "--broker", url) == 0
    capsys.readouterr()
    # More than one job, and no terminal to ask on: refused without --yes, nothing touched.
    assert cli("purge", "q9", "--broker", url) == 1
    assert "add --yes" in capsys.readouterr().err
    assert cli("purge", "q9", "--yes", "--broker", url) == 0
    assert "deleted 2 of 2" in capsys.readouterr().out
    assert cli("job", job_id, "--broker", url) == 3


def test_retry_and_delete_by_queue_ask_first(srv: Server, url: str, capsys: pytest.CaptureFixture[str]) -> None:
    bad = run_jobs(srv, Job("boom", b"1"), Job("boom", b"2"))
    assert cli("retry", "--queue", "tasqueue:tasks", "--broker", url) == 1
    assert "retry would touch 2 jobs; add --yes" in capsys.readouterr().err
    assert cli("retry", "--queue", "tasqueue:tasks", "--yes", "--json", "--broker", url) == 0
    assert json.loads(capsys.readouterr().out) == {"matched": 2, "done": 2, "skipped": []}
    assert {asyncio.run(srv.get_job(i)).status for i in bad} == {"queued"}
    assert cli("delete", bad[0], "--broker", url) == 0  # one job: no question
    assert "deleted 1 of 1" in capsys.readouterr().out
    assert cli("delete", "--queue", "tasqueue:tasks", "--broker", url) == 1
    assert "give --state with --queue" in capsys.readouterr().err
    assert cli("retry", "some-id", "--queue", "q", "--broker", url) == 1
    assert "not both" in capsys.readouterr().err


def test_workers_and_schedules_print_tables(srv: Server, url: str, capsys: pytest.CaptureFixture[str]) -> None:
    asyncio.run(_enqueue(srv, Job("echo", b"", JobOpts(schedule="0 * * * *"))))
    assert cli("schedules", "--broker", url) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["SCHEDULE", "TASK", "QUEUE", "CRON"]
    assert "echo" in lines[1] and "0 * * * *" in lines[1]
    assert cli("workers", "--json", "--broker", url) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_top_once_prints_a_frame(srv: Server, url: str, capsys: pytest.CaptureFixture[str]) -> None:
    run_jobs(srv, Job("echo", b""), Job("boom", b"x"))
    assert cli("top", "--once", "--broker", url) == 0
    frame = capsys.readouterr().out
    assert "tasqueue top" in frame
    assert "tasqueue:tasks" in frame
    assert "RuntimeError: boom" in frame  # the latest failures


def test_top_without_rich_says_what_to_install(
    url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "rich.console", None)
    assert cli("top", "--once", "--broker", url) == 1
    assert "pip install 'tasqueue-core[cli]'" in capsys.readouterr().err


# ---- worker ----------------------------------------------------------------------------------

APP = """
from tasqueue import Job, JobCtx, Server

srv = Server(load_entrypoints=False, shutdown_timeout=5)


@srv.task("hello")
async def hello(payload: bytes, ctx: JobCtx) -> None:
    print("hello", payload.decode(), flush=True)


srv.sync.enqueue(Job("hello", b"world"))  # memory:// is per process: enqueue from inside it
"""


def test_worker_runs_a_server_until_sigterm(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(textwrap.dedent(APP))
    proc = subprocess.Popen(
        [sys.executable, "-m", "tasqueue.cli", "worker", "app:srv"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": ""},
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "hello world\n"  # the job ran: the worker is up
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "worker started" in err
    assert "worker stopped" in err


def test_worker_reports_a_bad_app_without_a_traceback(app_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (app_dir / "notaserver.py").write_text("srv = 42\n")
    for spec, expected in [
        ("no_such_module_here:srv", "cannot import module 'no_such_module_here'"),
        ("notaserver", "expected module:attribute"),
        ("notaserver:missing", "has no attribute 'missing'"),
        ("notaserver:srv", "is a int, not a tasqueue.Server"),
    ]:
        assert cli("worker", spec) == 1
        err = capsys.readouterr().err
        assert err.startswith("tasqueue: error: "), err
        assert expected in err, err


def test_worker_keeps_the_traceback_of_a_broken_app(app_dir: Path) -> None:
    (app_dir / "brokenapp.py").write_text("import module_that_does_not_exist\n")
    with pytest.raises(ModuleNotFoundError, match="module_that_does_not_exist"):
        load_server("brokenapp:srv")


def test_worker_without_tasks_is_a_clear_error(app_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (app_dir / "emptyapp.py").write_text("from tasqueue import Server\nsrv = Server(load_entrypoints=False)\n")
    assert cli("worker", "emptyapp:srv", "--log-level", "error") == 1
    assert "no tasks are registered" in capsys.readouterr().err


def test_the_console_script_is_installed() -> None:
    script = Path(sys.executable).with_name("tasqueue")
    if not script.exists():
        pytest.skip(f"no console script next to {sys.executable} (tasqueue-core not installed with its scripts)")
    done = subprocess.run([str(script), "--version"], capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 0
    assert done.stdout.startswith("tasqueue ")


def test_worker_logs_json_lines_with_a_flag(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(textwrap.dedent(APP))
    proc = subprocess.Popen(
        [sys.executable, "-m", "tasqueue.cli", "worker", "app:srv", "--log-format", "json"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": ""},
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "hello world\n"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    records = [json.loads(line) for line in err.splitlines()]
    assert {"ts", "level", "logger", "pid", "msg"} <= set(records[0])
    assert any(r["msg"].startswith("worker started") and r["level"] == "info" for r in records)
    assert records[-1]["msg"] == "worker stopped"
    assert all(r["pid"] == proc.pid for r in records)


def test_dashboard_without_its_package_says_what_to_install(capsys: pytest.CaptureFixture[str]) -> None:
    try:
        import tasqueue_dashboard  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("tasqueue-dashboard is installed here; tests/dashboard runs the command")
    assert main(["dashboard", "--broker", "redis://127.0.0.1:1/0"]) == 1
    assert "pip install tasqueue-dashboard" in capsys.readouterr().err
