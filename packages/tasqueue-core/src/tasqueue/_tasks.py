"""Starting asyncio tasks cheaply."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def start_task(coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
    """Run ``coro`` as a task; from Python 3.12 eagerly, up to its first real wait.

    A publish to an in-process backend, which never waits, then finishes without a trip through
    the event loop, which is most of what such a task costs.
    """
    if sys.version_info >= (3, 12):
        return asyncio.Task(coro, loop=asyncio.get_running_loop(), eager_start=True)
    return asyncio.create_task(coro)
