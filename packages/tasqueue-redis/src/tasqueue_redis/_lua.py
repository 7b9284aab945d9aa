"""The Lua scripts, loaded from the package's ``lua/`` folder and called by SHA.

Every script is a ``#!lua`` line with its flags, then ``_common.lua`` (shared helpers), then its
own file (or files: a fused script is one file's prelude followed by another's body). The
flags tell Redis (7.0 and newer) what a script may do when memory is full: a script without
``allow-oom`` is refused *before it starts* once ``maxmemory`` is reached, so a claim never
leases a job whose outcome could not be stored, and an enqueue fails at once.
Scripts that only free or renew (ack, give back, extend) keep running. Calls go out as
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

from redis.exceptions import NoScriptError, ResponseError

__all__ = ["Execute", "Script"]

#: Sends one command and returns its reply: ``client.execute_command`` or ``Lanes.execute``.
Execute = Callable[..., Awaitable[Any]]


def _source(names: tuple[str, ...], flags: str) -> str:
    folder = resources.files("tasqueue_redis") / "lua"
    shebang = f"#!lua flags={flags}" if flags else "#!lua"
    return "\n".join((shebang, *((folder / f"{name}.lua").read_text("utf-8") for name in ("_common", *names))))


class Script:
    """One Lua script: its source and SHA, and a call with the NOSCRIPT fallback."""

    __slots__ = ("name", "sha", "source")

    def __init__(self, name: str, flags: str = "", *, parts: tuple[str, ...] = ()) -> None:
        self.name = name
        self.source = _source(parts or (name,), flags)
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
        try:
            await client.script_load(self.source)
        except ResponseError as exc:
            if "near '#'" not in str(exc):
                raise
            # Redis before 7.0 does not know the #!lua line.
            msg = f"tasqueue-redis needs Redis 7.0 or newer (its scripts declare flags); this server refused them: {exc}"
            raise ResponseError(msg) from exc

    def args(self, keys: list[str], args: list[Any]) -> tuple[Any, ...]:
        """The arguments of an EVALSHA of this script, for a pipeline."""
        return ("EVALSHA", self.sha, len(keys), *keys, *args)


# Scripts that add data are refused when memory is full; those that free or renew run anyway.
ENQUEUE = Script("enqueue")
#: An enqueue that first stores the jobs' records (``RedisBroker.fused_enqueue``).
ENQUEUE_RECORDS = Script("enqueue_records", parts=("records", "enqueue"))
CLAIM = Script("claim")
ACK = Script("ack", "allow-oom")
NACK = Script("nack", "allow-oom")
EXTEND = Script("extend", "allow-oom")
PENDING = Script("pending", "no-writes")
RESULTS_SET = Script("results_set", parts=("results_write", "results_set"))
#: A worker's batch of outcomes and the acks of the deliveries they end (``RedisBroker.fused_settle``).
SETTLE = Script("settle", parts=("results_write", "settle"))
RESULTS_LIST = Script("results_list", "no-writes")
CONTROL_REMOVE = Script("control_remove", "allow-oom")
CONTROL_DRAIN = Script("control_drain", "allow-oom")
CONTROL_PROMOTE = Script("control_promote")
