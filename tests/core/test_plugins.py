"""Plugins: schemes registered through hooks, conflicts, blocking, middleware from plugins."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from tasqueue import Middleware, PluginConflictError, Server, UnknownSchemeError, hookimpl
from tasqueue.hookspecs import RegisterBroker, RegisterMiddleware, RegisterResults
from tasqueue.memory import MemoryBroker, MemoryResults


class AcmePlugin:
    """A third party's backend, registered in process."""

    def __init__(self) -> None:
        self.urls: list[str] = []

    def broker(self, url: str, **options: Any) -> MemoryBroker:
        self.urls.append(url)
        return MemoryBroker(visibility_timeout=7)

    def results(self, url: str, **options: Any) -> MemoryResults:
        self.urls.append(url)
        return MemoryResults()

    @hookimpl
    def tasqueue_register_brokers(self, register: RegisterBroker) -> None:
        register("acme", self.broker)

    @hookimpl
    def tasqueue_register_results(self, register: RegisterResults) -> None:
        register("acme", self.results)


def test_a_plugin_object_adds_a_scheme() -> None:
    plugin = AcmePlugin()
    srv = Server(broker="acme://host/1", results="ACME://host/2", plugins=[plugin], load_entrypoints=False)
    assert plugin.urls == ["acme://host/1", "ACME://host/2"]
    assert srv.broker.visibility_timeout == 7


def test_the_unknown_scheme_error_lists_plugin_schemes() -> None:
    with pytest.raises(UnknownSchemeError, match=r"installed: acme://, memory://"):
        Server(broker="zzz://", plugins=[AcmePlugin()], load_entrypoints=False)


class Clash:
    @hookimpl
    def tasqueue_register_brokers(self, register: RegisterBroker) -> None:
        register("memory", lambda url, **o: MemoryBroker())


def test_two_plugins_claiming_one_scheme_is_an_error_naming_both() -> None:
    with pytest.raises(PluginConflictError) as err:
        Server(plugins=[Clash()], load_entrypoints=False)
    text = str(err.value)
    assert "'memory://'" in text
    assert "tasqueue.memory.broker_from_url" in text and "Clash" in text


class Misspelled:
    @hookimpl
    def tasqueue_register_broker(self, register: RegisterBroker) -> None:  # no such hook: missing "s"
        register("x", MemoryBroker)


def test_a_misspelled_hook_is_caught_when_the_server_is_built() -> None:
    import pluggy

    with pytest.raises(pluggy.PluginValidationError, match="tasqueue_register_broker"):
        Server(plugins=[Misspelled()], load_entrypoints=False)


def test_blocking_the_builtin_plugin_removes_its_scheme(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASQUEUE_DISABLE_PLUGINS", "otel, memory")
    with pytest.raises(UnknownSchemeError, match=r"installed: none"):
        Server(load_entrypoints=False)
    srv = Server(broker=MemoryBroker(), results=MemoryResults(), load_entrypoints=False)
    assert isinstance(srv.broker, MemoryBroker)


class Tag(Middleware):
    def __init__(self, name: str, seen: list[str]) -> None:
        self.name = name
        self.seen = seen


class TaggingPlugin:
    def __init__(self) -> None:
        self.servers: list[Server] = []
        self.seen: list[str] = []

    @hookimpl
    def tasqueue_register_middleware(self, server: Server, register: RegisterMiddleware) -> None:
        self.servers.append(server)
        register(Tag("plugin", self.seen))


def test_plugins_add_middleware_once_per_server_inside_explicit_middleware() -> None:
    plugin = TaggingPlugin()
    explicit = Tag("explicit", [])
    srv = Server(plugins=[plugin], middleware=[explicit], load_entrypoints=False)
    assert plugin.servers == [srv]
    assert [m.name for m in srv.middleware] == ["explicit", "plugin"]  # type: ignore[attr-defined]


def test_importing_tasqueue_pulls_in_no_backend_client() -> None:
    code = (
        "import sys, tasqueue, tasqueue.testing\n"
        "heavy = {'redis', 'nats', 'opentelemetry'} & {m.split('.')[0] for m in sys.modules}\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
