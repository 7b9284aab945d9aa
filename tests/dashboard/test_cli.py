"""``tasqueue dashboard``: the core's command runs the package's, alone on uvicorn."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from servers import free_port
from tasqueue.cli import main


def test_help_comes_from_the_dashboard_package(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["dashboard", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "tasqueue dashboard" in out and "--basic-auth" in out and "--read-only" in out


def test_without_a_target_it_says_what_to_give(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TASQUEUE_BROKER", "TASQUEUE_RESULTS", "TASQUEUE_APP"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(SystemExit) as exit_:
        main(["dashboard"])
    assert "--broker URL" in str(exit_.value.code)


def test_basic_auth_must_name_user_and_password(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dashboard", "--broker", "memory://", "--basic-auth", "justuser"]) == 2
    assert "USER:PASSWORD" in capsys.readouterr().err


@pytest.fixture
def served(redis_server, tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """``tasqueue dashboard -A app:srv`` in a process of its own, with basic auth from the environment."""
    (tmp_path / "dashapp.py").write_text(
        textwrap.dedent(
            f"""
            from tasqueue import Server
            srv = Server("{redis_server.url}", "{redis_server.url}")
            """
        )
    )
    port = free_port()
    env = {**os.environ, "TASQUEUE_DASHBOARD_AUTH": "admin:pw"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tasqueue.cli", "dashboard", "-A", "dashapp:srv", "--port", str(port), "--root-path", "/tq"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield f"http://127.0.0.1:{port}", proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()


def test_runs_alone_on_uvicorn(served: tuple[str, subprocess.Popen[str]]) -> None:
    url, proc = served
    deadline = time.monotonic() + 20
    while True:
        try:
            health = httpx.get(url + "/health")
            break
        except httpx.TransportError:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "the dashboard did not start listening"
            time.sleep(0.1)  # another process is starting: polling its port is the wait
    assert health.text == "ok"
    assert httpx.get(url + "/").status_code == 401
    page = httpx.get(url + "/", auth=("admin", "pw"))
    assert page.status_code == 200
    assert 'href="/tq/workers"' in page.text  # --root-path: links for the proxy's prefix
    assert "dashapp:srv" in page.text
    proc.send_signal(signal.SIGINT)
    # uvicorn re-raises the signal once it has shut down, as a process killed by it ends.
    assert proc.wait(10) in (0, 130, -signal.SIGINT)
    out = proc.stdout.read() if proc.stdout else ""
    assert "Traceback" not in out, out
    assert "Finished server process" in out
