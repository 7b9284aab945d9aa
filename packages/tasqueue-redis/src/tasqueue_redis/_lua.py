"""The Lua scripts, loaded from the package's ``lua/`` folder and called by SHA.

Every script is ``_common.lua`` (shared helpers) followed by its own file (or files: a fused
script is one file's prelude followed by another's body). Calls go out as
EVALSHA; after a Redis restart (or on a Cluster node that never saw the script) the server
answers NOSCRIPT, and the script is loaded and called again. That second call is safe because
every script is written to be replayed: redis-py also replays commands on its own after a
connection error, when it cannot know whether the first try ran.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

from redis.exceptions import NoScriptError

__all__ = ["Execute", "Script"]

#: Sends one command and returns its reply: ``client.execute_command`` or ``Lanes.execute``.
Execute = Callable[..., Awaitable[Any]]


def _source(*names: str) -> str:
    folder = resources.files("tasqueue_redis") / "lua"
    return "\n".join((folder / f"{name}.lua").read_text("utf-8") for name in ("_common", *names))


class Script:
    """One Lua script: its source and SHA, and a call with the NOSCRIPT fallback."""

    __slots__ = ("name", "sha", "source")

    def __init__(self, name: str, *parts: str) -> None:
        self.name = name
        self.source = _source(*parts or (name,))
        self.sha = hashlib.sha1(self.source.encode("utf-8"), usedforsecurity=False).hexdigest()

    async def __call__(self, client: Any, keys: list[str], args: list[Any], execute: Execute | None = None) -> Any:
        """Run the script on ``client`` (sending the command with ``execute``, when given)."""
        send = execute or client.execute_command
        try:
            return await send("EVALSHA", self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await self.load(client)
            return await send("EVALSHA", self.sha, len(keys), *keys, *args)

    async def load(self, client: Any) -> None:
        """Load the script (on every primary, for a Cluster client)."""
        await client.script_load(self.source)

    def args(self, keys: list[str], args: list[Any]) -> tuple[Any, ...]:
        """The arguments of an EVALSHA of this script, for a pipeline."""
        return ("EVALSHA", self.sha, len(keys), *keys, *args)


ENQUEUE = Script("enqueue")
#: An enqueue that first stores the jobs' records (``RedisBroker.fused_enqueue``).
ENQUEUE_RECORDS = Script("enqueue_records", "records", "enqueue")
CLAIM = Script("claim")
ACK = Script("ack")
NACK = Script("nack")
EXTEND = Script("extend")
PENDING = Script("pending")
RESULTS_SET = Script("results_set")
RESULTS_LIST = Script("results_list")
CONTROL_REMOVE = Script("control_remove")
CONTROL_DRAIN = Script("control_drain")
CONTROL_PROMOTE = Script("control_promote")
