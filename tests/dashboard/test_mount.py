"""Mounted under a prefix in the ASGI frameworks people use: every link and action stays under it."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from dashboard.dash_support import Stack, csrf_of
from tasqueue_dashboard import create_app

pytestmark = [pytest.mark.asyncio, pytest.mark.parametrize("backend", ["memory"])]


def fastapi_host(dashboard: Any) -> Any:
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/")
    async def home() -> dict[str, str]:
        return {"app": "host"}

    app.mount("/ops/queues", dashboard)
    return app


def litestar_host(dashboard: Any) -> Any:
    from litestar import Litestar, asgi, get

    @get("/")
    async def home() -> dict[str, str]:
        return {"app": "host"}

    @asgi("/ops/queues", is_mount=True, copy_scope=True)
    async def queues(scope: Any, receive: Any, send: Any) -> None:
        await dashboard(scope, receive, send)

    return Litestar(route_handlers=[home, queues])


def starlette_host(dashboard: Any) -> Any:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    return Starlette(routes=[Mount("/ops/queues", dashboard)])


@pytest.mark.parametrize("host", [fastapi_host, litestar_host, starlette_host], ids=["fastapi", "litestar", "starlette"])
async def test_pages_links_and_actions_live_under_the_mount(stack: Stack, host: Any) -> None:
    job_id = await stack.enqueue("ok", b"{}", queue="parked")
    app = host(create_app(stack.inspector, cache_ttl=0))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://dash.test") as client:
        page = await client.get("/ops/queues/")
        assert page.status_code == 200
        links = re.findall(r'(?:href|src|action|hx-get)="(/[^"]*)"', page.text)
        assert links
        assert all(link.startswith("/ops/queues/") for link in links), links
        listing = await client.get("/ops/queues/queues/parked")
        assert f'href="/ops/queues/jobs/{job_id}"' in listing.text
        assert (await client.get("/ops/queues/static/htmx.min.js")).status_code == 200
        token = await csrf_of(client, "/ops/queues/queues/parked")
        form = {"queue": "parked", "csrf": token, "next": "/ops/queues/queues/parked"}
        paused = await client.post(
            "/ops/queues/actions/pause",
            content=str(httpx.QueryParams(form)),
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert paused.status_code == 303
        assert paused.headers["location"].startswith("/ops/queues/queues/parked?note=paused")
        assert (await stack.inspector.queue("parked")).paused
