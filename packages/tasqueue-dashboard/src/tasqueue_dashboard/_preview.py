"""Payloads and results as text an operator can read, cut to a preview.

A formatter hook (``create_app(formatter=...)``) sees each payload first: it can decode the
application's own format, or redact fields, and returns the text to show (``None``: use the
default). The default shows JSON pretty-printed, msgpack as JSON, readable UTF-8 as it is, and
anything else as a hex dump.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Callable
from typing import Literal

import msgspec

from tasqueue.messages import JobMessage

__all__ = ["Formatter", "Preview", "preview"]

#: ``formatter(message, data, kind)``: the text to show for ``data`` (the job's payload when
#: ``kind`` is ``"payload"``, its saved result when ``"result"``), or ``None`` for the default.
Formatter = Callable[[JobMessage, bytes, Literal["payload", "result"]], str | None]

LIMIT = 8 * 1024


class Preview(msgspec.Struct, frozen=True):
    text: str
    kind: str  # what the default made of the bytes: json, msgpack, text, hex, or custom
    size: int
    cut: bool


def _readable(text: str) -> bool:
    return not any(unicodedata.category(c) == "Cc" and c not in "\t\n\r" for c in text)


def _hex(data: bytes) -> str:
    lines = []
    for at in range(0, len(data), 16):
        chunk = data[at : at + 16]
        ascii_ = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{at:08x}  {chunk.hex(' '):<47}  {ascii_}")
    return "\n".join(lines)


def default_text(data: bytes) -> tuple[str, str]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None:
        try:
            return json.dumps(json.loads(text), indent=2, ensure_ascii=False), "json"
        except ValueError:
            pass
        if _readable(text):
            return text, "text"
    try:
        decoded = msgspec.msgpack.decode(data)
    except msgspec.DecodeError:
        pass
    else:
        if isinstance(decoded, dict | list):
            return json.dumps(decoded, indent=2, ensure_ascii=False, default=repr), "msgpack"
    return _hex(data[:LIMIT]), "hex"


def preview(message: JobMessage, data: bytes, kind: Literal["payload", "result"], formatter: Formatter | None) -> Preview:
    """``data`` as text, cut to about 8 kB."""
    custom = formatter(message, data, kind) if formatter is not None else None
    if custom is not None:
        text, how = custom, "custom"
    else:
        # Big payloads are cut before decoding, so a 50 MB blob costs no 50 MB of JSON.
        text, how = default_text(data if len(data) <= 4 * LIMIT else data[:LIMIT])
    cut = len(text) > LIMIT or (how != "custom" and len(data) > 4 * LIMIT)
    return Preview(text[:LIMIT], how, len(data), cut)
