"""The docs say what the code does: every hook is documented, the README's commands and examples work.

In the Markdown files, a ``<!-- test: run -->`` line right above a ```python block marks a
complete program that must run as it is; ``<!-- test: conformance -->`` marks the example
conformance test file of docs/writing-a-backend.md.
"""

from __future__ import annotations

import ast
import inspect
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from tasqueue import hookspecs
from tasqueue.middleware import Middleware
from tasqueue.plugins import DISABLE_ENV, ENTRY_POINT_GROUP

ROOT = Path(__file__).resolve().parents[2]
PLUGINS_MD = ROOT / "docs" / "plugins.md"
README = ROOT / "README.md"
MARKDOWN = sorted([README, *ROOT.glob("docs/*.md"), *ROOT.glob("packages/*/README.md")])


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence
    lang: str
    code: str
    marker: str  # the ``<!-- test: ... -->`` right above it, or ""

    def __str__(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def code_blocks(path: Path) -> list[Block]:
    blocks: list[Block] = []
    lines = path.read_text().splitlines()
    n = 0
    while n < len(lines):
        opening = re.match(r"^```(\S*)", lines[n])
        if opening is None:
            n += 1
            continue
        start = n
        n += 1
        body: list[str] = []
        while n < len(lines) and not lines[n].startswith("```"):
            body.append(lines[n])
            n += 1
        above = re.match(r"^<!-- test: (\S+) -->$", lines[start - 1]) if start else None
        blocks.append(Block(path, start + 1, opening.group(1), "\n".join(body) + "\n", above.group(1) if above else ""))
        n += 1
    return blocks


def blocks_marked(marker: str) -> list[Block]:
    return [b for path in MARKDOWN for b in code_blocks(path) if b.marker == marker]


def hook_specs() -> list[tuple[str, list[str]]]:
    return [
        (name, list(inspect.signature(fn).parameters))
        for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
        if name.startswith("tasqueue_")
    ]


# ---- hooks -----------------------------------------------------------------------------------


def test_there_are_hook_specs_to_document() -> None:
    assert len(hook_specs()) >= 3


@pytest.mark.parametrize(("name", "params"), hook_specs(), ids=[name for name, _ in hook_specs()])
def test_every_hook_spec_is_documented_under_a_heading_with_its_signature(name: str, params: list[str]) -> None:
    signature = f"{name}({', '.join(params)})"
    headings = [line for line in PLUGINS_MD.read_text().splitlines() if line.startswith("#")]
    assert any(signature in heading for heading in headings), f"docs/plugins.md has no heading with {signature}"


@pytest.mark.parametrize("method", ["enqueue", "process"])
def test_middleware_methods_are_documented_with_their_signature(method: str) -> None:
    params = [p for p in inspect.signature(getattr(Middleware, method)).parameters if p != "self"]
    signature = f"Middleware.{method}({', '.join(params)})"
    assert signature in PLUGINS_MD.read_text()


def test_plugin_loading_switches_are_documented() -> None:
    text = PLUGINS_MD.read_text()
    assert f"[project.entry-points.{ENTRY_POINT_GROUP}]" in text
    assert DISABLE_ENV in text
    assert "load_entrypoints=False" in text


# ---- README ----------------------------------------------------------------------------------


def test_readme_opens_with_the_quickstart_and_test_commands() -> None:
    lines = README.read_text().splitlines()
    first = code_blocks(README)[0]
    # Nothing but the title comes before the two commands.
    assert [line for line in lines[: first.line - 1] if line.strip()] == ["# tasqueue"]
    assert first.lang == "sh"
    quickstart, tests = first.code.splitlines()

    # 1. A fresh venv, core installed from the checkout, the quickstart run with it.
    venv = re.fullmatch(r"python3 -m venv (\S+) && \1/bin/pip install (\S+) && \1/bin/python (\S+)", quickstart)
    assert venv is not None, quickstart
    package, script = venv.group(2), venv.group(3)
    assert (ROOT / package / "pyproject.toml").is_file()
    assert (ROOT / script).is_file()
    assert script == "examples/quickstart.py"

    # 2. Every test session, as CI runs them.
    assert tests == "pip install nox uv && nox"
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^python3 -m nox\s*$", ci, re.MULTILINE), "CI should run the README's `nox`"


def test_the_nox_quickstart_session_runs_the_readme_quickstart() -> None:
    noxfile = (ROOT / "noxfile.py").read_text()
    assert 'session.run("python", "examples/quickstart.py")' in noxfile


def test_readme_example_runs() -> None:
    (example,) = [b for b in code_blocks(README) if b.marker == "run"]
    done = _run(example)
    assert done.stdout.strip() == "5"


# ---- every example ---------------------------------------------------------------------------


@pytest.mark.parametrize("block", [b for path in MARKDOWN for b in code_blocks(path) if b.lang == "python"], ids=str)
def test_python_blocks_are_valid_python(block: Block) -> None:
    # Tour fragments may use top-level await, as in an asyncio REPL.
    compile(block.code, str(block), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


@pytest.mark.parametrize("block", blocks_marked("run"), ids=str)
def test_complete_examples_run(block: Block) -> None:
    _run(block)


def _run(block: Block) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-c", block.code], capture_output=True, text=True, timeout=120, check=False, cwd=ROOT)
    assert done.returncode == 0, f"{block} failed:\n{done.stdout}\n{done.stderr}"
    return done


# A stand-in for the backend that docs/writing-a-backend.md's example test file imports: the
# memory:// classes with the `from_url` constructors the example calls.
FAKE_BACKEND = """
from __future__ import annotations

from typing import Any

from tasqueue.memory import MemoryBroker, MemoryResults


class MyBroker(MemoryBroker):
    @classmethod
    def from_url(cls, url: str, *, prefix: str = "", **options: Any) -> MyBroker:
        return cls(**options)


class MyResults(MemoryResults):
    @classmethod
    def from_url(cls, url: str, *, prefix: str = "", **options: Any) -> MyResults:
        return cls(**options)
"""


def test_the_example_conformance_test_file_passes_on_memory(tmp_path: Path) -> None:
    (example,) = blocks_marked("conformance")
    (tmp_path / "tasqueue_mybackend.py").write_text(textwrap.dedent(FAKE_BACKEND))
    (tmp_path / "test_conformance_mybackend.py").write_text(example.code)
    (tmp_path / "pytest.ini").write_text("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_conformance_mybackend.py"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    summary = done.stdout.strip().splitlines()[-1]
    assert re.match(r"\d+ passed(, \d+ warnings?)? in ", summary), summary  # none failed, skipped or errored


# ---- links -----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_at_files_that_exist(path: Path) -> None:
    text = path.read_text()
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue
        if not (path.parent / target.split("#")[0]).exists():
            broken.append(target)
    assert broken == []


# ---- installing ------------------------------------------------------------------------------


def test_every_pip_install_in_the_readme_installs_from_the_checkout() -> None:
    # The names are not on PyPI: an install by name would fail, or fetch someone else's package.
    commands = [
        line.split("#")[0]
        for block in code_blocks(README)
        if block.lang == "sh"
        for line in block.code.splitlines()
        if re.search(r"pip install (?!nox)", line)
    ]
    assert any("-e ./packages/tasqueue-core" in c for c in commands), "the README should show an editable install"
    for command in commands:
        arguments = re.split(r"&&|;", command.split("pip install", 1)[1])[0].split()
        targets = [a.strip("\"'") for a in arguments if not a.startswith("-")]
        assert targets, command
        for target in targets:
            path = target.split("[")[0]
            assert (ROOT / path / "pyproject.toml").is_file() or (path.startswith("dist/") and path.endswith(".whl")), command


def test_a_nox_session_builds_and_checks_every_package() -> None:
    noxfile = (ROOT / "noxfile.py").read_text()
    assert re.search(r"^@nox\.session\(default=False\)\ndef build\(", noxfile, re.MULTILINE)
    assert '"twine", "check", "--strict"' in noxfile
    assert "nox -s build" in README.read_text()
