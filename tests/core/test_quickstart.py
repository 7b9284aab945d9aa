"""The quickstart is the first thing a newcomer runs: it must run, say what happened and exit 0."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

QUICKSTART = Path(__file__).resolve().parents[2] / "examples" / "quickstart.py"


def test_quickstart_runs_and_every_job_ends_as_expected() -> None:
    done = subprocess.run(
        [sys.executable, str(QUICKSTART)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=QUICKSTART.parent,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1] == "every job ended as expected"
    # One line per kind of work, each with the status it must have ended in.
    expected = {"job": "successful", "group": "successful", "chain": "successful", "retry": "successful", "broken": "failed"}
    for what, status in expected.items():
        assert any(line.split()[:3] == ["ok", what, status] for line in lines), (what, done.stdout)
    assert "UNEXPECTED" not in done.stdout
    assert "Traceback" not in done.stderr
