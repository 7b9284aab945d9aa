"""Discovery and configuration: the entry point, explicit providers, and never two instrumentations at once."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

import pytest
from opentelemetry import metrics, trace
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.trace import NoOpTracerProvider

import tasqueue_otel
import tasqueue_otel.plugin
from tasqueue import ConfigurationError, Job, JobCtx, Server
from tasqueue.testing import running
from tasqueue_otel import OtelMiddleware, OtelPlugin, installed


def otel_middleware(srv: Server) -> list[OtelMiddleware]:
    return [m for m in srv.middleware if isinstance(m, OtelMiddleware)]


async def one_job(srv: Server) -> str:
    """Run one no-op job through ``srv`` and return its id."""
    if "noop" not in srv.get_tasks():

        @srv.task("noop")
        async def noop(payload: bytes, ctx: JobCtx) -> None:
            return None

    async with running(srv):
        job_id = await srv.enqueue(Job("noop", b""))
        await srv.wait(job_id, timeout=10)
    return job_id


def test_the_package_declares_its_entry_point() -> None:
    [ep] = entry_points(group="tasqueue", name="otel")
    assert ep.value == "tasqueue_otel.plugin"
    assert ep.load() is tasqueue_otel.plugin


def test_loading_the_entry_point_imports_no_opentelemetry() -> None:
    code = (
        "import sys, importlib.metadata as md\n"
        "[ep] = md.entry_points(group='tasqueue', name='otel'); ep.load()\n"
        "import tasqueue_otel\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('opentelemetry'))\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.asyncio
async def test_installed_it_instruments_every_server() -> None:
    async with Server() as srv:
        [mw] = otel_middleware(srv)
        assert installed(srv) is mw


@pytest.mark.asyncio
async def test_tasqueue_disable_plugins_blocks_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASQUEUE_DISABLE_PLUGINS", "otel")
    async with Server() as srv:
        assert otel_middleware(srv) == []
        assert installed(srv) is None
        job_id = await one_job(srv)
        assert (await srv.get_job(job_id)).headers == {}


@pytest.mark.asyncio
async def test_load_entrypoints_false_leaves_it_out() -> None:
    async with Server(load_entrypoints=False) as srv:
        assert otel_middleware(srv) == []


@pytest.mark.asyncio
async def test_an_explicit_plugin_replaces_the_entry_point(otel) -> None:
    plugin = otel.plugin()
    async with Server(plugins=[plugin]) as srv:
        [mw] = otel_middleware(srv)
        assert installed(srv) is mw
        job_id = await one_job(srv)
    assert len(otel.sends(job_id)) == 1
    assert len(otel.runs(job_id)) == 1
    assert otel.total("tasqueue.jobs.enqueued") == 1
    assert otel.total("tasqueue.jobs.succeeded") == 1


@pytest.mark.asyncio
@pytest.mark.parametrize("explicit_first", [True, False])
async def test_the_explicit_plugin_wins_whatever_the_registration_order(otel, explicit_first: bool) -> None:
    plugin = otel.plugin()
    plugins = [plugin, tasqueue_otel.plugin] if explicit_first else [tasqueue_otel.plugin, plugin]
    async with Server(plugins=plugins, load_entrypoints=False) as srv:
        assert len(otel_middleware(srv)) == 1
        job_id = await one_job(srv)
    assert len(otel.sends(job_id)) == 1  # the explicit plugin's provider got the spans
    assert len(otel.runs(job_id)) == 1


@pytest.mark.asyncio
async def test_two_explicit_plugins_are_a_configuration_error(otel) -> None:
    with pytest.raises(ConfigurationError, match="two tasqueue-otel plugins were given to one Server"):
        Server(plugins=[otel.plugin(), otel.plugin()])


@pytest.mark.asyncio
async def test_middleware_given_by_hand_and_the_entry_point_make_one_span_each(otel) -> None:
    by_hand = OtelMiddleware(tracer_provider=otel.tracer_provider, meter_provider=otel.meter_provider)
    async with Server(middleware=[by_hand]) as srv:
        assert len(otel_middleware(srv)) == 2  # both installed; the inner one passes through at run time
        job_id = await one_job(srv)
    assert len(otel.sends(job_id)) == 1
    assert len(otel.runs(job_id)) == 1
    assert otel.total("tasqueue.jobs.enqueued") == 1
    assert otel.total("tasqueue.jobs.succeeded") == 1


@pytest.mark.asyncio
async def test_no_op_providers_run_jobs_and_write_no_trace_context() -> None:
    plugin = OtelPlugin(tracer_provider=NoOpTracerProvider(), meter_provider=NoOpMeterProvider())
    async with Server(plugins=[plugin]) as srv:
        job_id = await one_job(srv)
        job = await srv.get_job(job_id)
    assert job.status == "successful"
    assert "traceparent" not in job.headers


_globals: list[Any] = []


def set_global_providers(make: Callable[[], Any]) -> Any:
    """Set the process-wide providers (possible once per process) to in-memory ones; reuse them after."""
    if not _globals:
        o = make()
        trace.set_tracer_provider(o.tracer_provider)
        metrics.set_meter_provider(o.meter_provider)
        _globals.append(o)
    o = _globals[0]
    o.exporter.clear()
    return o


@pytest.mark.asyncio
async def test_by_default_it_follows_the_global_providers_even_when_set_later(otel) -> None:
    # Built before the application configured OpenTelemetry: the API's proxies pick the providers up.
    async with Server() as srv:
        assert len(otel_middleware(srv)) == 1
        o = set_global_providers(type(otel))
        job_id = await one_job(srv)
    assert trace.get_tracer_provider() is o.tracer_provider
    assert len(o.sends(job_id)) == 1
    assert len(o.runs(job_id)) == 1
    assert o.total("tasqueue.jobs.succeeded", task="noop") >= 1


@pytest.mark.asyncio
async def test_disabling_the_entry_point_leaves_an_explicit_plugin_working(otel, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASQUEUE_DISABLE_PLUGINS", "otel")
    async with Server(plugins=[otel.plugin()]) as srv:
        assert len(otel_middleware(srv)) == 1
        job_id = await one_job(srv)
    assert len(otel.runs(job_id)) == 1
