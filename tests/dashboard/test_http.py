"""Every route of the dashboard over HTTP, with a real worker, on memory:// and on Redis."""

from __future__ import annotations

import logging
import re
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pytest

from dashboard.dash_support import PREFIX, Stack, post
from tasqueue import Chain, Group, Job, JobOpts
from tasqueue.control import Finished, JobState
from tasqueue.jobs import DEFAULT_QUEUE
from tasqueue.testing import eventually

pytestmark = pytest.mark.asyncio
Q = DEFAULT_QUEUE
QP = quote(Q, safe="")


def ids_on(html: str) -> list[str]:
    return re.findall(r'<tr data-job="([^"]+)"', html)


async def test_overview_counts_each_state_per_queue(stack: Stack) -> None:
    ok = [await stack.enqueue("ok", b"1") for _ in range(3)]
    bad = await stack.enqueue("fail", b"x")
    await stack.enqueue("ok", b"later", eta=datetime.now(UTC) + timedelta(hours=1))
    await stack.enqueue("ok", b"parked", queue="parked")  # no worker consumes it
    for job_id in ok:
        await stack.until_status(job_id, "successful")
    await stack.until_status(bad, "failed")
    await stack.until_indexed(Q, "failed", 1)
    await stack.until_indexed(Q, "successful", 3)
    client = stack.client()

    page = await client.get("/")
    assert page.status_code == 200
    html = page.text
    default = html[html.index(f'<tr data-queue="{Q}">') :]
    default = default[: default.index("</tr>")]
    for state, n in (("queued", 0), ("delayed", 1), ("successful", 3), ("failed", 1)):
        assert re.search(rf'data-count="{state}" href="[^"]+">{n}<', default), (state, default)
    parked = html[html.index('<tr data-queue="parked">') :]
    assert re.search(r'data-count="queued" href="[^"]+">1<', parked)
    assert "no live workers" in parked[: parked.index("</tr>")]
    assert f'href="{PREFIX}/queues/{QP}"' in html  # links carry the mount prefix
    # The live fragment is the same section, ready for htmx to swap.
    fragment = await client.get("/live/queues")
    assert fragment.text.startswith('<section id="queues" data-live')
    assert f'hx-get="{PREFIX}/live/queues"' in fragment.text
    api = (await client.get("/api/queues")).json()
    assert {q["name"]: q["counts"]["successful"] for q in api["queues"]}[Q] == 3


async def test_throughput_chart_draws_what_finished_between_samples(stack: Stack) -> None:
    client = stack.client()
    await client.get("/")  # first sample
    ids = [await stack.enqueue("ok", b"1") for _ in range(4)]
    for job_id in ids:
        await stack.until_status(job_id, "successful")

    async def counted() -> bool:  # all four in the backend's counter, so one sample sees them all
        return (await stack.inspector.queue(Q)).counts.total_successful == 4

    await eventually(counted)

    async def drawn() -> str | None:
        html = (await client.get("/live/queues")).text
        return html if "<title>4 successful, 0 failed</title>" in html else None

    html = await eventually(drawn)
    assert '<svg class="chart"' in html


async def test_jobs_pages_follow_the_cursor_to_the_end(stack: Stack) -> None:
    made = {await stack.enqueue("ok", str(n).encode(), queue="parked") for n in range(7)}
    client = stack.client()
    seen: list[str] = []
    url: str | None = "/queues/parked?state=queued&limit=3"
    pages = 0
    while url is not None:
        html = (await client.get(url)).text
        seen += ids_on(html)
        pages += 1
        match = re.search(r'<a href="([^"]+)" rel="next">', html)
        url = match.group(1).replace("&amp;", "&")[len(PREFIX) :] if match else None
    assert pages == 3
    assert sorted(seen) == sorted(made)
    # The live fragment of a list is the list section alone, polling its own URL.
    fragment = (await client.get("/live/queues/parked?limit=3")).text
    assert fragment.startswith('<section id="jobs" data-live')
    assert f'hx-get="{PREFIX}/live/queues/parked?state=queued&amp;limit=3"' in fragment
    assert len(ids_on(fragment)) == 3
    # The same pages as JSON, for scripts.
    listed: list[str] = []
    cursor = ""
    while True:
        answer = (await client.get("/api/queues/parked/jobs", params={"limit": 3, "cursor": cursor})).json()
        listed += [job["id"] for job in answer["jobs"]]
        if answer["cursor"] is None:
            break
        cursor = answer["cursor"]
    assert listed == seen


async def test_filters_by_task_and_by_time(stack: Stack) -> None:
    a = [await stack.enqueue("ok", b"a", queue="parked") for _ in range(2)]
    b = await stack.enqueue("fail", b"b", queue="parked")
    client = stack.client()
    html = (await client.get("/queues/parked?state=queued&task=ok&limit=20")).text
    assert sorted(ids_on(html)) == sorted(a)
    assert b not in html
    # A failed job indexed two hours ago is outside "the last hour" and inside "the last day".
    await stack.inspector.record([Finished("parked", b, JobState.FAILED, time.time() - 7200)])
    assert ids_on((await client.get("/queues/parked?state=failed&since=1h")).text) == []
    assert ids_on((await client.get("/queues/parked?state=failed&since=24h")).text) == [b]
    # The filter form names the queue too: it lands on that queue's page with the rest of the query.
    moved = await client.get("/jobs", params={"queue": "parked", "state": "failed", "since": "24h", "task": ""})
    assert moved.status_code == 303
    assert moved.headers["location"] == f"{PREFIX}/queues/parked?state=failed&since=24h"
    # Pages of a task filter are topped up from further reads and still miss nothing.
    tasks = ("ok", "fail", "fail", "ok", "ok", "ok", "ok")
    mixed = [await stack.enqueue(task, b"m", queue="mixed") for task in tasks]
    wanted = [j for j, task in zip(mixed, tasks, strict=True) if task == "ok"]
    seen: list[str] = []
    url: str | None = "/queues/mixed?task=ok&limit=3&order=oldest"
    while url is not None:
        html = (await client.get(url)).text
        seen += ids_on(html)
        match = re.search(r'<a href="([^"]+)" rel="next">', html)
        url = match.group(1).replace("&amp;", "&")[len(PREFIX) :] if match else None
    assert seen == wanted
    bad = await client.get("/queues/parked?state=nope")
    assert bad.status_code == 400
    assert "unknown state" in bad.text


async def test_job_page_shows_payload_error_traceback_and_result(stack: Stack) -> None:
    bad = await stack.enqueue("fail", b'{"user": 7}', max_retries=0)
    good = await stack.enqueue("ok", b"[1, 2]")
    await stack.until_status(bad, "failed")
    await stack.until_status(good, "successful")
    client = stack.client()
    html = (await client.get(f"/jobs/{bad}")).text
    assert 'data-state="failed"' in html
    assert "cannot do {&#34;user&#34;: 7}" in html  # the error, escaped
    assert "Traceback (most recent call last)" in html
    assert "Boom" in html
    assert "&#34;user&#34;: 7" in html and "json" in html  # payload pretty-printed as JSON
    html = (await client.get(f"/jobs/{good}")).text
    assert 'data-state="successful"' in html
    fragment = (await client.get(f"/live/jobs/{good}")).text
    assert fragment.startswith('<section id="job" data-live') and 'data-state="successful"' in fragment
    assert (await client.get("/health")).text == "ok"
    assert "Result" in html and "&#34;echo&#34;" in html
    missing = await client.get("/jobs/no-such-job")
    assert missing.status_code == 404


async def test_formatter_hook_decides_what_a_payload_shows(stack: Stack) -> None:
    job_id = await stack.enqueue("ok", b"secret-token", queue="parked")

    def redact(message, data, kind):
        return "[redacted]" if kind == "payload" else None

    html = (await stack.client(formatter=redact).get(f"/jobs/{job_id}")).text
    assert "[redacted]" in html
    assert "secret-token" not in html


async def test_group_and_chain_pages_and_links(stack: Stack) -> None:
    group_id = await stack.server.enqueue_group(Group([Job("ok", b"1"), Job("ok", b"2")]))
    chain_id = await stack.server.enqueue_chain(Chain([Job("ok", b"1"), Job("ok", b"2")]))

    async def finished() -> bool:
        return (await stack.server.get_group(group_id)).status == "successful" and (
            await stack.server.get_chain(chain_id)
        ).status == "successful"

    await eventually(finished)
    client = stack.client()
    group = await stack.server.get_group(group_id)
    html = (await client.get(f"/groups/{group_id}")).text
    for member in group.job_status:
        assert f"/jobs/{member}" in html
    member = next(iter(group.job_status))
    assert f"/groups/{group_id}" in (await client.get(f"/jobs/{member}")).text
    chain = await stack.server.get_chain(chain_id)
    html = (await client.get(f"/chains/{chain_id}")).text
    assert all(f"/jobs/{j}" in html for j in chain.prev_jobs)
    assert f"/chains/{chain_id}" in (await client.get(f"/jobs/{chain.prev_jobs[0]}")).text


async def test_find_opens_a_job_group_or_chain_by_id(stack: Stack) -> None:
    job_id = await stack.enqueue("ok", queue="parked")
    group_id = await stack.server.enqueue_group(Group([Job("ok", b"1", JobOpts(queue="parked"))]))
    client = stack.client()
    found = await client.get("/find", params={"id": job_id})
    assert found.status_code == 303
    assert found.headers["location"] == f"{PREFIX}/jobs/{job_id}"
    found = await client.get("/find", params={"id": f"  {group_id} "})
    assert found.headers["location"] == f"{PREFIX}/groups/{group_id}"
    missing = await client.get("/find", params={"id": "nothing-here"})
    assert missing.status_code == 404
    assert "nothing-here" in missing.text


async def test_retry_a_failed_job_and_it_succeeds(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tasqueue.dashboard")
    job_id = await stack.enqueue("flaky", b"r1")
    await stack.until_status(job_id, "failed")
    await stack.until_indexed(Q, "failed", 1)
    stack.healed.add(b"r1")
    client = stack.client()
    answer = await post(client, "retry", {"ids": job_id, "scope": "selected"}, page=f"/queues/{QP}?state=failed")
    assert answer.status_code == 303
    assert answer.headers["location"].startswith(f"{PREFIX}/queues/{QP}?state=failed&note=retried+1+of+1")
    await stack.until_status(job_id, "successful")
    note = await client.get(answer.headers["location"][len(PREFIX) :])
    assert "retried 1 of 1 job" in note.text
    # Every action is logged, with what it did.
    assert any(
        r.name == "tasqueue.dashboard" and "action retry (selected)" in r.getMessage() and "retried 1 of 1" in r.getMessage()
        for r in caplog.records
    )


async def test_retry_all_matching_asks_with_the_count_then_retries(stack: Stack) -> None:
    ids = [await stack.enqueue("flaky", f"m{n}".encode()) for n in range(3)]
    other = await stack.enqueue("fail", b"stays")
    for job_id in [*ids, other]:
        await stack.until_status(job_id, "failed")
    await stack.until_indexed(Q, "failed", 4)
    stack.healed.update(f"m{n}".encode() for n in range(3))
    client = stack.client()
    fields = {"scope": "all", "queue": Q, "state": "failed", "task": "flaky", "since": ""}
    ask = await post(client, "retry", fields, page=f"/queues/{QP}?state=failed&task=flaky")
    assert ask.status_code == 200
    assert re.search(r"data-confirm-count>3<", ask.text)
    assert await stack.status(ids[0]) == "failed"  # nothing happened yet
    done = await post(client, "retry", {**fields, "confirmed": "1"}, page=f"/queues/{QP}?state=failed&task=flaky")
    assert done.status_code == 303
    for job_id in ids:
        await stack.until_status(job_id, "successful")
    assert await stack.status(other) == "failed"


async def test_run_now_makes_a_delayed_job_run(stack: Stack) -> None:
    job_id = await stack.enqueue("ok", b"soon", eta=datetime.now(UTC) + timedelta(hours=1))
    client = stack.client()
    assert job_id in ids_on((await client.get(f"/queues/{QP}?state=delayed")).text)
    answer = await post(client, "run-now", {"ids": job_id, "scope": "selected"})
    assert answer.status_code == 303
    await stack.until_status(job_id, "successful")


async def test_delete_is_confirmed_first(stack: Stack) -> None:
    job_id = await stack.enqueue("ok", queue="parked")
    client = stack.client()
    # Deleting from the job's own page comes back to its queue, not to the page of a deleted job.
    page = (await client.get(f"/jobs/{job_id}")).text
    delete_form = page[page.index('action="/admin/tq/actions/delete"') :]
    assert 'name="next" value="/admin/tq/queues/parked?state=queued"' in delete_form[: delete_form.index("</form>")]
    ask = await post(client, "delete", {"ids": job_id, "scope": "selected"})
    assert ask.status_code == 200
    assert "data-confirm-count>1<" in ask.text
    assert (await client.get(f"/jobs/{job_id}")).status_code == 200
    done = await post(client, "delete", {"ids": job_id, "scope": "selected", "confirmed": "1"})
    assert done.status_code == 303
    assert "deleted+1+of+1" in done.headers["location"]
    assert (await client.get(f"/jobs/{job_id}")).status_code == 404
    assert ids_on((await client.get("/queues/parked")).text) == []


async def test_delete_all_matching_a_time_filter_leaves_the_rest(stack: Stack) -> None:
    old, new = [await stack.enqueue("fail", f"{n}".encode(), queue="parked") for n in range(2)]
    await stack.inspector.record(
        [Finished("parked", old, JobState.FAILED, time.time() - 7200), Finished("parked", new, JobState.FAILED, time.time())]
    )
    client = stack.client()
    fields = {"scope": "all", "queue": "parked", "state": "failed", "task": "", "since": "1h", "confirmed": "1"}
    done = await post(client, "delete", fields)
    assert done.status_code == 303
    assert (await client.get(f"/jobs/{new}")).status_code == 404
    assert (await client.get(f"/jobs/{old}")).status_code == 200


async def test_purge_needs_the_queue_name_typed(stack: Stack) -> None:
    ids = [await stack.enqueue("ok", queue="parked") for _ in range(3)]
    client = stack.client()
    ask = await post(client, "purge", {"queue": "parked"}, page="/queues/parked")
    assert ask.status_code == 200
    assert "data-confirm-count>3<" in ask.text and 'name="typed"' in ask.text
    wrong = await post(client, "purge", {"queue": "parked", "confirmed": "1", "typed": "parkd"}, page="/queues/parked")
    assert wrong.status_code == 400
    assert (await stack.inspector.queue("parked")).counts.queued == 3
    done = await post(client, "purge", {"queue": "parked", "confirmed": "1", "typed": "parked"}, page="/queues/parked")
    assert done.status_code == 303
    assert "purged+3+of+3" in done.headers["location"]
    assert (await stack.inspector.queue("parked")).counts.queued == 0
    for job_id in ids:
        assert (await client.get(f"/jobs/{job_id}")).status_code == 404


async def test_pause_holds_jobs_and_resume_lets_them_run(stack: Stack) -> None:
    client = stack.client()
    answer = await post(client, "pause", {"queue": Q})
    assert answer.status_code == 303
    assert (await stack.inspector.queue(Q)).paused
    assert 'class="badge paused"' in (await client.get(f"/queues/{QP}")).text
    await stack.until_worker_paused(Q)
    job_id = await stack.enqueue("ok", b"held")
    assert await stack.status(job_id) == "queued"
    answer = await post(client, "resume", {"queue": Q})
    assert answer.status_code == 303
    await stack.until_status(job_id, "successful")
    assert 'class="badge paused"' not in (await client.get(f"/queues/{QP}")).text


async def test_workers_page_lists_the_running_worker(stack: Stack) -> None:
    client = stack.client()

    async def listed() -> str | None:
        html = (await client.get("/workers")).text
        return html if "data-worker=" in html else None

    html = await eventually(listed)
    worker = (await stack.inspector.workers())[0]
    assert worker.host in html and str(worker.pid) in html
    assert f"/queues/{QP}?state=running" in html
    assert (await client.get("/live/workers")).text.startswith('<section id="workers"')


async def test_schedules_page_lists_recurring_jobs(stack: Stack) -> None:
    schedule_id = await stack.enqueue("ok", b"tick", schedule="0 6 * * *")
    client = stack.client()

    async def listed() -> str | None:
        html = (await client.get("/schedules")).text
        return html if "0 6 * * *" in html else None

    html = await eventually(listed)
    assert schedule_id[:20] in html


async def test_unknown_action_and_missing_selection(stack: Stack) -> None:
    client = stack.client()
    assert (await post(client, "explode", {})).status_code == 404
    none = await post(client, "retry", {"scope": "selected"})
    assert none.status_code == 400
    assert "no job selected" in none.text


async def test_static_files_are_served_from_the_package(stack: Stack) -> None:
    client = stack.client()
    html = (await client.get("/")).text
    for src in re.findall(r'(?:src|href)="([^"]+/static/[^"]+)"', html):
        answer = await client.get(src[len(PREFIX) :])
        assert answer.status_code == 200, src
    assert "https://" not in html.replace("https://github.com", "")  # nothing from a CDN
