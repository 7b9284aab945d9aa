"""``tasqueue plugins`` and ``tasqueue --version`` with every first-party package installed."""

from __future__ import annotations

import json
import subprocess
import sys


def tq(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tasqueue.cli", *args], capture_output=True, text=True, timeout=60, check=False)


def test_plugins_lists_each_package_with_its_schemes_and_hooks() -> None:
    done = tq("plugins", "--json")
    assert done.returncode == 0, done.stderr
    found = {p["name"]: p for p in json.loads(done.stdout)}
    assert (found["memory"]["package"], found["memory"]["schemes"]) == ("tasqueue-core", ["memory"])
    redis = found["redis"]
    assert (redis["package"], redis["version"], redis["schemes"]) == ("tasqueue-redis", "0.1.0", ["redis", "rediss", "unix"])
    assert redis["hooks"] == ["tasqueue_register_brokers", "tasqueue_register_results"]
    otel = found["otel"]
    assert (otel["package"], otel["schemes"], otel["hooks"]) == ("tasqueue-otel", [], ["tasqueue_register_middleware"])
    table = tq("plugins").stdout.splitlines()
    assert table[0].split() == ["PLUGIN", "PACKAGE", "VERSION", "SCHEMES", "HOOKS"]
    assert any(line.split()[:4] == ["redis", "tasqueue-redis", "0.1.0", "redis://"] for line in table[1:])


def test_version_lists_core_and_every_plugin_package() -> None:
    done = tq("--version")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "tasqueue 0.1.0"
    assert "  tasqueue-redis 0.1.0 (redis://, rediss://, unix://)" in lines
    assert any(line.startswith("  tasqueue-otel 0.1.0") for line in lines)
