"""The README's console example runs and prints one trace across enqueue and run."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "packages" / "tasqueue-otel" / "README.md"


def marked_blocks(marker: str) -> list[str]:
    # `<!-- test: otel-run -->` (not the integration suite's `run`): it needs opentelemetry-sdk,
    # which only this package's test environment has.
    pattern = rf"<!-- test: {marker} -->\n```python\n(.*?)\n```"
    return re.findall(pattern, README.read_text(encoding="utf-8"), re.DOTALL)


def json_objects(text: str) -> list[dict]:
    decoder, found, at = json.JSONDecoder(), [], 0
    while (start := text.find("{", at)) != -1:
        obj, at = decoder.raw_decode(text, start)
        found.append(obj)
    return found


def test_the_console_example_prints_one_trace() -> None:
    [code] = marked_blocks("otel-run")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip().endswith("successful")
    spans = {s["name"]: s for s in json_objects(done.stdout)}
    chain = ["POST /orders", "send tasqueue:tasks", "process tasqueue:tasks", "call the payment provider"]
    assert set(chain) <= set(spans)
    assert len({spans[name]["context"]["trace_id"] for name in chain}) == 1
    for parent, child in itertools.pairwise(chain):
        assert spans[child]["parent_id"] == spans[parent]["context"]["span_id"]
