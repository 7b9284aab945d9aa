"""How the ``tasqueue`` command shows things: JSON a script can parse, tables a terminal can take.

Bytes never reach a terminal raw: readable UTF-8 shows as text, anything else (or text with
control characters, which could drive the terminal) as ``{"base64": ...}``; big payloads show a
preview with their size.
"""

from __future__ import annotations

import base64
import shutil
import unicodedata
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec

#: Bytes of a payload or result shown before ``--full`` is needed.
PREVIEW = 1024


def show_bytes(data: bytes) -> str | dict[str, str]:
    """Bytes as JSON that is safe on a terminal: the text if it is readable UTF-8, else base64."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:
        if not any(unicodedata.category(c) == "Cc" and c not in "\t\n\r" for c in text):
            return text
    return {"base64": base64.b64encode(data).decode("ascii")}


def preview(data: bytes, full: bool) -> str | dict[str, str]:
    """``show_bytes`` of the first ``PREVIEW`` bytes (all of them with ``full``)."""
    if full or len(data) <= PREVIEW:
        return show_bytes(data)
    head = data[:PREVIEW]
    # Cut at a character boundary, so that text stays text.
    for back in range(4):
        try:
            head[: len(head) - back].decode("utf-8")
        except UnicodeDecodeError:
            continue
        head = head[: len(head) - back]
        break
    return show_bytes(head)


def plain(value: Any, *, full: bool = True) -> Any:
    """Structs as dicts with every field, bytes made safe (previewed unless ``full``), datetimes as ISO text."""
    if isinstance(value, msgspec.Struct):
        return {name: plain(getattr(value, name), full=full) for name in value.__struct_fields__}
    if isinstance(value, bytes):
        return preview(value, full)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list | tuple | set | frozenset):
        return [plain(v, full=full) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v, full=full) for k, v in value.items()}
    return value


def to_json(value: Any, *, indent: int = 2, full: bool = True) -> str:
    """A value as JSON text (see ``plain``)."""
    data = msgspec.json.encode(plain(value, full=full))
    return (msgspec.json.format(data, indent=indent) if indent else data).decode()


def size(n: int | None) -> str:
    """Bytes for people: ``812 B``, ``4.2 kB``, ``50.0 MB``."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n} B"  # pragma: no cover - the loop always returns


def ago(when: datetime | None, now: datetime | None = None) -> str:
    """How long ago (or, for a future time, how far ahead): ``3s``, ``4m12s``, ``in 2h05m``."""
    if when is None:
        return "-"
    seconds = ((now or datetime.now(UTC)) - when).total_seconds()
    ahead = seconds < 0
    text = span(abs(seconds))
    return f"in {text}" if ahead else text


def span(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def clock(when: datetime | None) -> str:
    return "-" if when is None else when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def one_line(text: str, width: int) -> str:
    """Text on one line of at most ``width`` characters, control characters replaced."""
    flat = "".join(c if unicodedata.category(c) != "Cc" else " " for c in text.replace("\n", " ⏎ "))
    return flat if len(flat) <= width else flat[: max(width - 1, 0)] + "…"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], *, last_flexible: bool = True) -> str:
    """A plain table in columns, fitted to the terminal width by cutting the last column."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    if last_flexible and len(widths) > 1:
        room = shutil.get_terminal_size((120, 24)).columns - sum(widths[:-1]) - 2 * (len(widths) - 1)
        widths[-1] = max(min(widths[-1], room), len(headers[-1]))
    lines = []
    for r in cells:
        parts = [one_line(c, w).ljust(w) for c, w in zip(r, widths, strict=True)]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)
