"""The event loop a worker process runs on: uvloop when it is installed, else asyncio's own.

uvloop (``pip install 'tasqueue-core[uvloop]'``) runs the loop and its sockets in C: on Redis it
cut a worker's CPU per no-op job by about a tenth (benchmarks/bench_redis.py). ``"auto"`` picks
it when importable, as uvicorn does; ``"asyncio"`` keeps the standard loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeAlias, TypeVar

from tasqueue.errors import ConfigurationError

__all__ = ["LOOPS", "Loop", "run"]

T = TypeVar("T")
Loop: TypeAlias = Literal["auto", "asyncio", "uvloop"]
LOOPS: tuple[Loop, ...] = ("auto", "asyncio", "uvloop")


def loop_factory(loop: Loop) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory ``asyncio.Runner`` takes for ``loop`` (``None``: asyncio's default)."""
    if loop not in LOOPS:
        msg = f"unknown event loop {loop!r}: use one of {', '.join(LOOPS)}"
        raise ConfigurationError(msg)
    if loop == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if loop == "uvloop":
            msg = "the uvloop event loop is not installed: pip install 'tasqueue-core[uvloop]' (or use loop='auto')"
            raise ConfigurationError(msg) from None
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(main: Coroutine[Any, Any, T], loop: Loop = "auto") -> T:
    """``asyncio.run(main)`` on the event loop ``loop`` names."""
    try:
        factory = loop_factory(loop)
    except BaseException:
        main.close()
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
