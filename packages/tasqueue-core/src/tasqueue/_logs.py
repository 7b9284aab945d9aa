"""Log output of ``tasqueue worker``: lines a person reads, or one JSON object per line for a collector."""

from __future__ import annotations

import logging
import os
import sys
from datetime import UTC, datetime

import msgspec

#: Set by the supervisor in each worker process: its slot number, shown in every log line.
SLOT_ENV = "TASQUEUE_WORKER_SLOT"

_encode = msgspec.json.Encoder().encode


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, pid, slot (under a supervisor), msg, exc."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "msg": record.getMessage(),
        }
        slot = os.environ.get(SLOT_ENV)
        if slot is not None:
            doc["slot"] = int(slot)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return _encode(doc).decode()


def setup(level: str, fmt: str) -> None:
    """Log to stderr at ``level`` in ``fmt`` (``text`` or ``json``), unless logging is configured already."""
    root = logging.getLogger()
    if root.handlers:
        return  # by the host (a test runner, an embedding program): theirs to decide
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        slot = os.environ.get(SLOT_ENV)
        who = f"[{slot}:%(process)d]" if slot is not None else "[%(process)d]"
        handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)-7s {who} %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
