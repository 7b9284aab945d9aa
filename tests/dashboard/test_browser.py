"""The dashboard in a real browser: Playwright driving the system's Chromium (``which chromium``).

The app runs on uvicorn on a loopback port in the test's own event loop, beside the worker. Each
test also takes a screenshot of what it shows; with ``DASHBOARD_SCREENSHOTS=dir`` they are written
there (the package README's pictures come from such a run), else into the test's tmp_path.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import pytest_asyncio
import uvicorn

from dashboard.dash_support import PREFIX, Stack, host_app, new_server, running_stack
from servers import free_port
from tasqueue import Server
from tasqueue.jobs import DEFAULT_QUEUE
from tasqueue.testing import eventually
from tasqueue_dashboard import create_app

# One browser serves the module's tests, so they all run in the module's event loop, fixtures too.
pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.parametrize("backend", ["memory"])]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    if os.environ.get("CI"):
        pytest.fail("CI needs Chromium for the browser tests: apt-get install chromium (.ci/run does)", pytrace=False)
    pytest.skip("no chromium on PATH (apt-get install chromium)", allow_module_level=True)

from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect  # noqa: E402

QP = quote(DEFAULT_QUEUE, safe="")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        launched = await p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-background-networking",
                "--no-first-run",
            ],
        )
        try:
            yield launched
        finally:
            await launched.close()


class Served:
    def __init__(self, stack: Stack, browser: Browser, tmp_path: Path) -> None:
        self.stack = stack
        self.browser = browser
        self.shots = Path(os.environ.get("DASHBOARD_SCREENSHOTS") or tmp_path)
        self._servers: list[tuple[uvicorn.Server, asyncio.Task[None]]] = []
        self.problems: list[str] = []
        self._contexts: list[BrowserContext] = []

    async def open(self, path: str = "/", **options: Any) -> Page:
        """A new page on a fresh dashboard app (``create_app(**options)``), served on a loopback port."""
        options.setdefault("refresh", 0.3)
        options.setdefault("cache_ttl", 0.1)
        port = free_port()
        config = uvicorn.Config(
            host_app(create_app(self.stack.inspector, **options)), host="127.0.0.1", port=port, log_level="warning"
        )
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())
        self._servers.append((server, task))
        while not server.started:
            assert not task.done(), "uvicorn stopped before it started"
            await asyncio.sleep(0.02)  # uvicorn says it listens by this flag only
        context = await self.browser.new_context(viewport={"width": 1200, "height": 720})
        self._contexts.append(context)
        page = await context.new_page()
        base = f"http://127.0.0.1:{port}"
        # Nothing but this dashboard is asked for (no CDN), and nothing breaks: no script error, no CSP report.
        page.on("request", lambda r: r.url.startswith(base) or self.problems.append(f"request to {r.url}"))
        page.on("console", lambda m: m.type == "error" and self.problems.append(f"console: {m.text}"))
        page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        self.base = base + PREFIX
        await page.goto(self.base + path)
        return page

    async def shot(self, page: Page, name: str) -> None:
        self.shots.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(self.shots / f"{name}.png"))

    async def close(self) -> None:
        for context in self._contexts:
            await context.close()
        for server, task in self._servers:
            server.should_exit = True
            await task


@pytest_asyncio.fixture(loop_scope="module")
async def server() -> AsyncIterator[Server]:
    async with new_server(None) as srv:
        yield srv


@pytest_asyncio.fixture(loop_scope="module")
async def stack(server: Server, backend: str) -> AsyncIterator[Stack]:
    async with running_stack(server, backend) as made:
        yield made


@pytest_asyncio.fixture(loop_scope="module")
async def served(stack: Stack, browser: Browser, tmp_path: Path) -> AsyncIterator[Served]:
    s = Served(stack, browser, tmp_path)
    try:
        yield s
    finally:
        await s.close()
    assert s.problems == []


async def test_a_job_moves_from_queued_to_successful_without_a_reload(served: Served) -> None:
    stack = served.stack
    await stack.inspector.pause(DEFAULT_QUEUE)
    await stack.until_worker_paused(DEFAULT_QUEUE)
    job_id = await stack.enqueue("ok", b'{"to": "ada@example.com", "template": "welcome"}')
    page = await served.open(f"/jobs/{job_id}")
    await page.evaluate("window.stayed = true")  # gone if the page reloads
    await expect(page.locator("[data-state]")).to_have_text("queued")
    overview = await served.open("/")
    total = overview.locator('[data-total="successful"]')
    await expect(total).to_have_text("0")
    await stack.inspector.resume(DEFAULT_QUEUE)
    await expect(page.locator("[data-state]")).to_have_text("successful", timeout=10_000)
    assert await page.evaluate("window.stayed") is True
    await expect(total).to_have_text("1", timeout=10_000)


async def test_retry_a_failed_job_and_see_it_succeed(served: Served) -> None:
    stack = served.stack
    failed = [await stack.enqueue("fail", f'{{"order": {n}}}'.encode()) for n in range(3)]
    job_id = await stack.enqueue("flaky", b'{"order": 42}')
    await stack.until_status(job_id, "failed")
    await stack.until_indexed(DEFAULT_QUEUE, "failed", 4)
    page = await served.open(f"/jobs/{failed[0]}")
    await expect(page.locator("details.traceback")).to_contain_text("Boom: cannot do")
    await served.shot(page, "job")
    await page.goto(f"{served.base}/queues/{QP}?state=failed")
    row = page.locator(f'tr[data-job="{job_id}"]')
    await expect(row).to_be_visible()
    await served.shot(page, "failed")
    stack.healed.add(b'{"order": 42}')
    await row.locator("input[name=ids]").check()
    await page.get_by_role("button", name="Retry selected").click()
    await expect(page.locator(".note")).to_contain_text("retried 1 of 1 job")
    await page.goto(f"{served.base}/jobs/{job_id}")
    await expect(page.locator("[data-state]")).to_have_text("successful", timeout=10_000)


async def test_purge_asks_for_the_queue_name_first(served: Served) -> None:
    stack = served.stack
    for n in range(3):
        await stack.enqueue("ok", f"{n}".encode(), queue="parked")
    page = await served.open("/queues/parked")
    await expect(page.locator('[data-tab="queued"] b')).to_have_text("3")
    await page.get_by_role("button", name="Purge queue…").click()
    await expect(page.locator("[data-confirm-count]")).to_have_text("3")
    await served.shot(page, "purge")
    await page.get_by_label("queue name").fill("nope")
    await page.locator("#confirm").click()
    await expect(page.locator(".problem")).to_contain_text("nothing was deleted")
    served.problems.remove("console: Failed to load resource: the server responded with a status of 400 (Bad Request)")
    assert (await stack.inspector.queue("parked")).counts.queued == 3
    await page.get_by_label("queue name").fill("parked")
    await page.locator("#confirm").click()
    await expect(page.locator(".note")).to_contain_text("purged 3 of 3 jobs")
    assert (await stack.inspector.queue("parked")).counts.queued == 0


async def test_read_only_mode_hides_every_action(served: Served) -> None:
    stack = served.stack
    failed = await stack.enqueue("fail", b"{}")
    await stack.until_status(failed, "failed")
    await stack.until_indexed(DEFAULT_QUEUE, "failed", 1)
    page = await served.open("/", read_only=True)
    await expect(page.locator("#read-only")).to_be_visible()
    for path in ("/", f"/queues/{QP}?state=failed", f"/jobs/{failed}", "/workers"):
        await page.goto(served.base + path)
        await expect(page.locator("main")).to_be_visible()
        for name in ("Retry", "Delete", "Pause", "Purge", "Run now"):
            assert await page.get_by_role("button", name=name).count() == 0, (path, name)
        assert await page.locator("input[name=ids]").count() == 0


async def test_main_views_and_a_hidden_tab_makes_no_requests(served: Served) -> None:
    stack = served.stack
    for n in range(5):
        await stack.enqueue("ok", f'{{"n": {n}}}'.encode())
    await stack.enqueue("fail", b'{"user": 7}')
    await stack.enqueue("ok", b"{}", queue="emails")
    await stack.enqueue("ok", b"{}", schedule="*/5 * * * *")
    await stack.until_indexed(DEFAULT_QUEUE, "failed", 1)
    page = await served.open("/")
    await expect(page.locator('[data-queue="emails"]')).to_be_visible()
    for n in range(8):  # finished while the page samples: bars in the throughput chart
        await stack.enqueue("ok", f'{{"n": {n}}}'.encode())
    await expect(page.locator("figure.throughput rect.bar-ok").first).to_be_attached(timeout=10_000)
    await served.shot(page, "overview")
    await page.goto(served.base + "/workers")
    await expect(page.locator("[data-worker]")).to_have_count(1)
    await served.shot(page, "workers")
    await page.goto(served.base + "/schedules")
    await expect(page.locator("[data-schedule]")).to_have_count(1)
    # Hidden: the timer keeps running but asks for nothing.
    await page.goto(served.base + "/")
    live: list[str] = []
    page.on("request", lambda r: "/live/" in r.url and live.append(r.url))
    await eventually(lambda: len(live) > 0, timeout=5)
    await page.evaluate("Object.defineProperty(document, 'hidden', {get: () => true})")
    await page.wait_for_timeout(300)  # let a request already sent finish
    before = len(live)
    await page.wait_for_timeout(1200)  # four refresh periods: the quiet is what is measured
    assert len(live) == before
