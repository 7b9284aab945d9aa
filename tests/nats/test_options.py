"""Names derived from queue names, options from URLs and arguments, and the plugin's schemes."""

from __future__ import annotations

import pytest

from servers import NatsServer, version_tuple
from tasqueue import Job, JobCtx, JobOpts, JobStatus, Server
from tasqueue.broker import Envelope
from tasqueue.errors import BrokerError, ConfigurationError
from tasqueue.testing import running
from tasqueue_nats import NatsBroker, NatsResults
from tasqueue_nats._client import token


def test_tokens_are_safe_and_one_to_one() -> None:
    assert token("tasqueue:tasks") == "tasqueue_3atasks"
    assert token("plain-name") == "plain-name"
    names = ["a.b", "a b", "a*", "a>", "a/b", "a_3ab", "a:b", "é", "", "_", "a\nb"]
    tokens = [token(n) for n in names]
    assert len(set(tokens)) == len(names)
    for t in tokens:
        assert t and all(c.isalnum() or c in "-_" for c in t) and t.isascii()


@pytest.mark.asyncio
async def test_awkward_queue_names_get_their_own_streams(nats_server: NatsServer, prefix: str) -> None:
    broker = NatsBroker(nats_server.url, prefix=prefix, visibility_timeout=5)
    try:
        names = ["tasqueue:tasks", "a.b c*>", "ünï/cödé", "a_3ab", "a:b"]
        for n, name in enumerate(names):
            await broker.enqueue(name, [Envelope(f"id-{n}", name.encode())])
        for n, name in enumerate(names):
            (got,) = await broker.fetch(name, 5, timeout=2)
            assert (got.id, got.data) == (f"id-{n}", name.encode())
            await broker.ack(name, [got])
    finally:
        await broker.close()


@pytest.mark.asyncio
async def test_url_options_reach_the_streams_and_the_consumer(nats_server: NatsServer, prefix: str) -> None:
    url = f"{nats_server.url}?prefix={prefix}&visibility_timeout=3&storage=memory&max_ack_pending=77&duplicate_window=30"
    broker = NatsBroker.from_url(url)
    results = NatsResults.from_url(f"{nats_server.url}?prefix={prefix}&expiry=120&storage=memory")
    try:
        assert broker.visibility_timeout == 3
        await broker.enqueue("q", [Envelope("x", b"")])
        stream = await broker.client.api(f"STREAM.INFO.{prefix}_q_q")
        assert stream["config"]["storage"] == "memory"
        assert stream["config"]["retention"] == "workqueue"
        assert stream["config"]["duplicate_window"] == 30 * 10**9
        consumer = await broker.client.api(f"CONSUMER.INFO.{prefix}_q_q.work")
        assert consumer["config"]["ack_wait"] == 3 * 10**9
        assert consumer["config"]["max_ack_pending"] == 77
        assert consumer["config"]["max_deliver"] == -1  # a redelivery limit would strand jobs
        await results.set("k", b"v")
        kept = await broker.client.api(f"STREAM.INFO.{prefix}_results")
        assert kept["config"]["max_age"] == 120 * 10**9 and kept["config"]["storage"] == "memory"
    finally:
        await broker.close()
        await results.close()


def test_arguments_win_over_the_url() -> None:
    broker = NatsBroker("nats://127.0.0.1:1?visibility_timeout=3", visibility_timeout=7)
    assert broker.visibility_timeout == 7
    assert NatsResults("nats://127.0.0.1:1?expiry=none").expiry is None


@pytest.mark.parametrize(
    ("url", "options", "says"),
    [
        ("nats://127.0.0.1:4222?visibilty_timeout=3", {}, "unknown option 'visibilty_timeout'"),
        ("nats://127.0.0.1:4222?visibility_timeout=-1", {}, "must be > 0"),
        ("nats://127.0.0.1:4222?replicas=zero", {}, "must be a whole number"),
        ("nats://127.0.0.1:4222?storage=disk", {}, "must be one of file, memory"),
        ("nats://127.0.0.1:4222?schedules=cron", {}, "must be one of auto, native, stream"),
        ("redis://127.0.0.1:4222", {}, "not a NATS URL"),
        ("nats://", {}, "names no server"),
        ("nats://u:p@127.0.0.1:4222?token=t", {}, "one way to authenticate"),
        ("tls://127.0.0.1:4222?tls_cert=/c.pem", {}, "tls_cert and tls_key go together"),
        ("nats://127.0.0.1:4222", {"expiry": 5}, "unknown option 'expiry' for the NATS broker"),
    ],
)
def test_misconfiguration_is_one_clear_line(url: str, options: dict[str, object], says: str) -> None:
    with pytest.raises(ConfigurationError, match=says) as caught:
        NatsBroker.from_url(url, **options)
    assert "\n" not in str(caught.value)


@pytest.mark.asyncio
async def test_schedules_native_on_an_old_server_says_what_to_do(nats_server: NatsServer, nats_version: str) -> None:
    broker = NatsBroker(nats_server.url, prefix="native", schedules="native")
    try:
        if version_tuple(nats_version) >= (2, 12):
            await broker.enqueue("q", [Envelope("x", b"", delay=30)])
            assert await broker.get_pending("q") == [b""]
        else:
            with pytest.raises(ConfigurationError, match=r"needs nats-server 2\.12 or newer"):
                await broker.enqueue("q", [Envelope("x", b"", delay=30)])
    finally:
        await broker.close()


@pytest.mark.asyncio
async def test_the_plugin_serves_nats_urls(nats_server: NatsServer, prefix: str) -> None:
    url = f"{nats_server.url}?prefix={prefix}"
    server = Server(url, url)
    assert isinstance(server.broker, NatsBroker) and isinstance(server.results, NatsResults)

    @server.task("hello")
    async def hello(payload: bytes, ctx: JobCtx) -> bytes:
        return b"hello " + payload

    async with server:
        job_id = await server.enqueue(Job("hello", b"nats", JobOpts(max_retries=1)))
        async with running(server):
            done = await server.wait(job_id, timeout=10)
        assert done.status is JobStatus.SUCCESSFUL
        assert await server.get_result(job_id) == b"hello nats"


@pytest.mark.asyncio
async def test_an_enqueue_while_the_server_is_down_fails_after_a_bounded_time(make_nats, prefix: str) -> None:
    server: NatsServer = make_nats()
    broker = NatsBroker(server.url, prefix=prefix, timeout=1)
    try:
        await broker.enqueue("q", [Envelope("before", b"")])
        server.kill()
        with pytest.raises(BrokerError, match=r"unreachable|no reply"):
            await broker.enqueue("q", [Envelope("during", b"")])
        server.start()  # same port, same store
        # The client reconnects by itself; the message acknowledged before the crash is there.
        await broker.enqueue("q", [Envelope("after", b"")])
        got = await broker.fetch("q", 5, timeout=5)
        assert {d.id for d in got} <= {"before", "after"}
        got += await broker.fetch("q", 5, timeout=2) if len(got) < 2 else []
        assert sorted(d.id for d in got) == ["after", "before"]
    finally:
        await broker.close()


@pytest.mark.asyncio
async def test_a_dead_server_is_a_clear_error(prefix: str) -> None:
    from servers import free_port

    broker = NatsBroker(f"nats://127.0.0.1:{free_port()}", prefix=prefix, connect_timeout=1)
    with pytest.raises(BrokerError, match=r"cannot connect to NATS at nats://127\.0\.0\.1") as caught:
        await broker.enqueue("q", [Envelope("x", b"")])
    assert "\n" not in str(caught.value)
    await broker.close()


@pytest.mark.asyncio
async def test_a_broker_and_a_store_share_one_connection(nats_server: NatsServer, prefix: str) -> None:
    broker = NatsBroker(nats_server.url, prefix=prefix)
    results = NatsResults(nats_server.url, prefix=prefix)
    other = NatsResults(f"nats://t0k3n@127.0.0.1:{nats_server.port}", prefix=prefix)  # other credentials
    try:
        await broker.enqueue("q", [Envelope("a", b"")])
        await results.set("k", b"v")
        assert await broker.client.nc() is await results._client.nc()
        assert await other._client.nc() is not await results._client.nc()
        await broker.close()  # the store goes on over the connection they shared
        assert await results.get("k") == b"v"
    finally:
        await results.close()
        await other.close()
