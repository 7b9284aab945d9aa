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
    assert cli("job", job_id, "--broker", url, "--results", url) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["id"] == job_id
    assert shown["status"] == "successful"
    assert shown["max_retry"] == 2
    assert shown["retried"] == 0
    assert shown["job"]["task"] == "echo"
    assert shown["job"]["payload"] == '{"hello": "world"}'  # readable text stays text
    assert shown["job"]["opts"]["max_retries"] == 2


def test_job_shows_binary_and_control_bytes_as_base64(srv: Server, url: str, capsys: pytest.CaptureFixture[str]) -> None:
    binary = b"\x00\xff\xfe raw"
    escape = b"\x1b]0;pwned\x07"  # valid UTF-8, but would drive the terminal
    ids = asyncio.run(_enqueue(srv, Job("echo", binary), Job("echo", escape)))
    for job_id, payload in zip(ids, (binary, escape), strict=True):
        assert cli("job", job_id, "--results", url) == 0
        shown = json.loads(capsys.readouterr().out)
        assert shown["status"] == "queued"
        assert shown["job"]["payload"] == {"base64": base64.b64encode(payload).decode()}


async def _enqueue(server: Server, *jobs: Job) -> list[str]:
    return [await server.enqueue(job) for job in jobs]


def test_result_writes_the_raw_bytes(srv: Server, url: str, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    payload = b"\x00\x01binary\xff"
    (job_id,) = run_jobs(srv, Job("echo", payload))
    assert cli("result", job_id, "--results", url) == 0
    assert capsysbinary.readouterr().out == payload


def test_pending_lists_waiting_jobs_of_a_queue(srv: Server, url: str, capsys: pytest.CaptureFixture[str]) -> None:
    first, second = asyncio.run(_enqueue(srv, Job("echo", b"1"), Job("echo", b"2")))
    (other,) = asyncio.run(_enqueue(srv, Job("echo", b"3", JobOpts(queue="other"))))

    assert cli("pending", "--broker", url) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[:4] for line in lines] == [[first, "echo", "queued", "0/0"], [second, "echo", "queued", "0/0"]]

    assert cli("pending", "--queue", "other", "--json", "--broker", url) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert json.loads(line)["id"] == other


def test_success_and_failed_list_ids(srv: Server, url: str, capsys: pytest.CaptureFixture[str]) -> None:
    good, bad = run_jobs(srv, Job("echo", b""), Job("boom", b""))
    assert cli("success", "--results", url) == 0
    assert capsys.readouterr().out.split() == [good]
    assert cli("failed", "--results", url) == 0
    assert capsys.readouterr().out.split() == [bad]


def test_urls_come_from_the_environment(
    srv: Server, url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (job_id,) = run_jobs(srv, Job("echo", b""))
    monkeypatch.setenv("TASQUEUE_BROKER", url)
    monkeypatch.setenv("TASQUEUE_RESULTS", url)
    assert cli("success") == 0
    assert capsys.readouterr().out.split() == [job_id]


def test_a_missing_job_is_one_line_and_exit_1(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("job", "no-such-job", "--results", url) == 1
    err = capsys.readouterr().err
    assert err == "tasqueue: error: job 'no-such-job' not found (never enqueued, expired, or deleted)\n"
    assert cli("result", "no-such-job", "--results", url) == 1
    assert "no result for job 'no-such-job'" in capsys.readouterr().err


def test_an_unknown_scheme_names_the_installed_ones(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("pending", "--broker", "bogus://somewhere") == 1
    err = capsys.readouterr().err
    assert err.startswith("tasqueue: error: no broker registered for 'bogus://' (installed: ")
    assert "memory://" in err
    assert "Traceback" not in err


def test_a_well_known_scheme_says_what_to_install(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASQUEUE_DISABLE_PLUGINS", "redis")  # as if tasqueue-redis were not installed
    assert cli("failed", "--results", "redis://127.0.0.1:1/0") == 1
    assert "pip install tasqueue-redis" in capsys.readouterr().err


def test_bare_memory_url_gets_a_note(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("success", "--results", "memory://") == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "lives inside one process" in captured.err


def test_help_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli("worker", "--help")
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "module:attribute" in out
    assert "SIGTERM" in out
    with pytest.raises(SystemExit) as exit_:
        cli("--version")
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith("tasqueue ")


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


def test_dashboard_without_its_package_says_what_to_install(capsys: pytest.CaptureFixture[str]) -> None:
    try:
        import tasqueue_dashboard  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("tasqueue-dashboard is installed here; tests/dashboard runs the command")
    assert main(["dashboard", "--broker", "redis://127.0.0.1:1/0"]) == 1
    assert "pip install tasqueue-dashboard" in capsys.readouterr().err
