"""Safe to expose: auth, read-only, CSRF, masked secrets, headers, and a cache shared by every tab."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest

from dashboard.dash_support import PREFIX, Stack, csrf_of, host_app, post
from tasqueue.inspector import Inspector, QueueInfo
from tasqueue_dashboard import create_app, mask_secrets, mask_url

pytestmark = [pytest.mark.asyncio, pytest.mark.parametrize("backend", ["memory"])]

ACTION_FORM = re.compile(r'<form method="post"|formaction=')


async def test_basic_auth_asks_then_lets_in(stack: Stack) -> None:
    client = stack.client(basic_auth=("admin", "s3cret"))
    refused = await client.get("/")
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"].startswith("Basic")
    wrong = await client.get("/", auth=("admin", "nope"))
    assert wrong.status_code == 401
    assert (await client.get("/", auth=("admin", "s3cret"))).status_code == 200
    garbled = await client.get("/", headers={"authorization": "Basic !!!"})
    assert garbled.status_code == 401
    # Probes need no password; nothing else is open.
    assert (await client.get("/health")).status_code == 200
    assert (await client.get("/static/dashboard.css")).status_code == 401


async def test_auth_hook_of_the_host_app_decides_roles(stack: Stack) -> None:
    def hook(request):
        return {"op": "operator", "view": "viewer"}.get(request.headers.get("x-role", ""))

    client = stack.client(auth=hook)
    assert (await client.get("/")).status_code == 403
    viewer = await client.get("/", headers={"x-role": "view"})
    assert viewer.status_code == 200
    assert not ACTION_FORM.search(viewer.text)
    assert 'id="read-only"' in viewer.text
    operator = await client.get("/", headers={"x-role": "op"})
    assert ACTION_FORM.search(operator.text)
    job_id = await stack.enqueue("ok", queue="parked")
    client.headers["x-role"] = "view"
    refused = await post(client, "delete", {"ids": job_id, "scope": "selected", "confirmed": "1"})
    assert refused.status_code == 403
    assert await stack.status(job_id) == "queued"


async def test_async_auth_hook(stack: Stack) -> None:
    async def hook(request):
        await asyncio.sleep(0)
        return "viewer"

    assert (await stack.client(auth=hook).get("/")).status_code == 200


async def test_read_only_mode_shows_no_action_and_refuses_posts(stack: Stack) -> None:
    failed = await stack.enqueue("fail", b"x")
    await stack.until_status(failed, "failed")
    client = stack.client(read_only=True)
    for path in ("/", "/queues/parked", f"/jobs/{failed}", "/workers"):
        page = await client.get(path)
        assert page.status_code == 200, path
        assert not ACTION_FORM.search(page.text), path
    refused = await post(client, "retry", {"ids": failed, "scope": "selected"})
    assert refused.status_code == 403
    assert "read-only" in refused.text
    assert await stack.status(failed) == "failed"


async def test_every_action_needs_the_csrf_token_of_its_cookie(stack: Stack) -> None:
    job_id = await stack.enqueue("ok", queue="parked")
    client = stack.client()
    form = {"ids": job_id, "scope": "selected", "confirmed": "1", "next": PREFIX + "/"}
    headers = {"content-type": "application/x-www-form-urlencoded"}
    # No token at all.
    no_token = await client.post("/actions/delete", content=httpx.QueryParams(form).__str__(), headers=headers)
    assert no_token.status_code == 403
    # A token, but not the one of this browser's cookie.
    token = await csrf_of(client)
    client.cookies.clear()
    other = await client.post("/actions/delete", content=str(httpx.QueryParams({**form, "csrf": token})), headers=headers)
    assert other.status_code == 403
    # The right token from another site's page.
    token = await csrf_of(client)
    cross = await client.post(
        "/actions/delete",
        content=str(httpx.QueryParams({**form, "csrf": token})),
        headers={**headers, "origin": "https://evil.example"},
    )
    assert cross.status_code == 403
    assert await stack.status(job_id) == "queued"
    same = await client.post(
        "/actions/delete",
        content=str(httpx.QueryParams({**form, "csrf": token})),
        headers={**headers, "origin": "http://dash.test"},
    )
    assert same.status_code == 303


async def test_the_csrf_cookie_is_strict_and_scoped_to_the_mount(stack: Stack) -> None:
    page = await stack.client().get("/")
    cookie = page.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and f"Path={PREFIX}" in cookie


async def test_an_action_never_redirects_off_the_dashboard(stack: Stack) -> None:
    client = stack.client()
    token = await csrf_of(client)
    answer = await client.post(
        "/actions/pause",
        content=str(httpx.QueryParams({"queue": "parked", "csrf": token, "next": "//evil.example/x"})),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert answer.status_code == 303
    assert answer.headers["location"].startswith(PREFIX + "/?")


async def test_headers_forbid_inline_scripts_and_framing(stack: Stack) -> None:
    page = await stack.client().get("/")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe" not in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert "<script>" not in page.text  # every script is a file of the package


async def test_passwords_in_urls_are_masked(stack: Stack) -> None:
    assert mask_url("redis://user:hunter2@db:6379/0") == "redis://user:****@db:6379/0"
    assert mask_url("redis://:hunter2@db/0") == "redis://:****@db/0"
    assert mask_url("redis://db/0") == "redis://db/0"
    assert mask_secrets("cannot reach rediss://u:p4ss@h:1/0 (timeout)") == "cannot reach rediss://u:****@h:1/0 (timeout)"
    html = (await stack.client(label="redis://ops:hunter2@10.0.0.5:6379/0").get("/")).text
    assert "hunter2" not in html
    assert "redis://ops:****@10.0.0.5:6379/0" in html
    # An error message that quotes a URL does not leak it either.
    failed = await stack.enqueue("fail", b"redis://app:t0ps3cret@cache/1")
    await stack.until_status(failed, "failed")
    job = (await stack.client().get(f"/jobs/{failed}")).text
    error = job[job.index('<pre class="error">') :]
    assert "t0ps3cret" not in error[: error.index("</pre>")]


class CountingInspector(Inspector):
    reads = 0

    async def queues(self) -> list[QueueInfo]:
        CountingInspector.reads += 1
        await asyncio.sleep(0.05)  # a slow backend: concurrent tabs arrive while the read is under way
        return await super().queues()


async def test_many_tabs_share_one_backend_read(stack: Stack) -> None:
    inspector = CountingInspector(stack.server)
    app = host_app(create_app(inspector, cache_ttl=60))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://dash.test" + PREFIX) as client:
        pages = await asyncio.gather(*(client.get("/live/queues") for _ in range(20)))
        assert all(p.status_code == 200 for p in pages)
        assert CountingInspector.reads == 1
        await client.get("/")
        assert CountingInspector.reads == 1
        # An action changes what the pages show, so it forgets the cached answers.
        await post(client, "pause", {"queue": "parked"})
        await client.get("/")
        assert CountingInspector.reads == 2


async def test_a_failing_backend_is_a_503_with_the_password_masked(stack: Stack) -> None:
    from tasqueue.errors import BrokerError

    class Down(Inspector):
        async def queues(self) -> list[QueueInfo]:
            msg = "cannot connect to redis://app:hunter2@db:6379/0"
            raise BrokerError(msg)

    app = host_app(create_app(Down(stack.server), cache_ttl=0))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://dash.test" + PREFIX) as client:
        page = await client.get("/")
    assert page.status_code == 503
    assert "hunter2" not in page.text and "redis://app:****@db" in page.text


async def test_options_are_checked(stack: Stack) -> None:
    with pytest.raises(ValueError, match="basic_auth or auth"):
        create_app(stack.inspector, basic_auth=("a", "b"), auth=lambda r: "operator")
    with pytest.raises(ValueError, match="refresh"):
        create_app(stack.inspector, refresh=0)
