"""Server.run's event loop: uvloop when installed (the [uvloop] extra), asyncio's on request."""

from __future__ import annotations

import asyncio
import sys

import pytest

from tasqueue import _loop
from tasqueue.errors import ConfigurationError


async def loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_asyncio_runs_on_the_standard_loop() -> None:
    assert _loop.run(loop_module(), "asyncio").startswith("asyncio")


def test_auto_without_uvloop_falls_back_to_asyncio(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # "not installed": importing it fails
    assert _loop.run(loop_module(), "auto").startswith("asyncio")


def test_asking_for_uvloop_without_it_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)
    main = loop_module()
    with pytest.raises(ConfigurationError, match=r"pip install 'tasqueue-core\[uvloop\]'"):
        _loop.run(main, "uvloop")
    assert main.cr_frame is None  # closed, not left to warn "never awaited"


def test_an_unknown_loop_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="unknown event loop 'trio'"):
        _loop.run(loop_module(), "trio")  # type: ignore[arg-type]


def test_auto_and_uvloop_use_uvloop_when_installed() -> None:
    pytest.importorskip("uvloop")
    assert _loop.run(loop_module(), "auto").startswith("uvloop")
    assert _loop.run(loop_module(), "uvloop").startswith("uvloop")
