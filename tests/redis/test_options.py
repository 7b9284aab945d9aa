"""URLs, options and errors: what a user types, and what they are told when it is wrong."""

from __future__ import annotations

import asyncio
import gc
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
import redis.asyncio as redis

from tasqueue import Job, Server
from tasqueue.broker import Envelope
from tasqueue.errors import BrokerError, ConfigurationError, NotFoundError, ResultsError
from tasqueue.testing import running
from tasqueue_redis import RedisBroker, RedisResults
from tasqueue_redis.plugin import broker_from_url, results_from_url


def test_the_plugin_module_imports_nothing_heavy() -> None:
    code = "import sys, tasqueue_redis.plugin, tasqueue_redis; assert 'redis' not in sys.modules, sorted(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.asyncio
async def test_urls_resolve_through_the_installed_plugin(redis_server, prefix: str) -> None:
    url = f"{redis_server.url}?prefix={prefix}"
    async with Server(broker=url, results=url) as srv:
        assert isinstance(srv.broker, RedisBroker) and isinstance(srv.results, RedisResults)

        @srv.task("hello", concurrency=2)
        async def hello(payload: bytes, ctx: object) -> bytes:
            return b"hello " + payload

        job_id = await srv.enqueue(Job("hello", b"redis"))
        async with running(srv):
            assert (await srv.wait(job_id, timeout=10)).status == "successful"
        assert await srv.get_result(job_id) == b"hello redis"


@pytest.mark.asyncio
async def test_a_broker_url_alone_keeps_results_in_redis_too(redis_server, prefix: str) -> None:
    # What a new user writes: one URL. A producer in another Server (another process, in real
    # life) must see what the worker recorded.
    url = f"{redis_server.url}?prefix={prefix}"
    async with Server(url) as worker, Server(url) as producer:
        assert isinstance(worker.results, RedisResults)

        @worker.task("hello")
        async def hello(payload: bytes, ctx: object) -> bytes:
            return b"hello " + payload

        job_id = await producer.enqueue(Job("hello", b"redis"))
        async with running(worker):
            assert (await producer.wait(job_id, timeout=10)).status == "successful"
        assert await producer.get_result(job_id) == b"hello redis"


@pytest.mark.parametrize("scheme", ["redis", "rediss", "unix"])
def test_every_scheme_is_registered(scheme: str) -> None:
    from tasqueue.plugins import PluginHost

    host = PluginHost()
    assert host.brokers.factories[scheme] is broker_from_url
    assert host.results.factories[scheme] is results_from_url


@pytest.mark.asyncio
async def test_query_options_reach_the_backends() -> None:
    url = (
        "redis://user:secret@127.0.0.1:1/3?visibility_timeout=12.5&prefix=app&max_connections=7"
        "&socket_timeout=2&socket_connect_timeout=0.5&retries=2&client_name=tq-test&health_check_interval=15"
    )
    broker = RedisBroker.from_url(url)
    try:
        assert broker.visibility_timeout == 12.5
        assert repr(broker) == "RedisBroker(prefix='app', visibility_timeout=12.5)"
        pool = broker.client.connection_pool
        assert pool.max_connections == 7
        kwargs = pool.connection_kwargs
        assert (kwargs["db"], kwargs["username"], kwargs["password"]) == (3, "user", "secret")
        assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (2.0, 0.5)
        assert (kwargs["client_name"], kwargs["health_check_interval"]) == ("tq-test", 15)
    finally:
        await broker.close()

    results = RedisResults.from_url("redis://127.0.0.1:1/0?expiry=none&list_expiry=60&list_limit=10&db=2&password=pw")
    try:
        assert (results.expiry, results.list_expiry, results.list_limit) == (None, 60.0, 10)
        assert results.client.connection_pool.connection_kwargs["password"] == "pw"
    finally:
        await results.close()

    defaults = RedisResults.from_url("redis://127.0.0.1:1/0")
    assert (defaults.expiry, defaults.list_expiry, defaults.list_limit) == (86400.0, 86400.0, 100_000)
    await defaults.close()


@pytest.mark.asyncio
async def test_keyword_options_win_over_the_url() -> None:
    broker = RedisBroker.from_url("redis://127.0.0.1:1/0?visibility_timeout=5", visibility_timeout=9.0)
    assert broker.visibility_timeout == 9.0
    await broker.close()


def test_tls_options_need_rediss() -> None:
    with pytest.raises(ConfigurationError, match=r"'ssl_cert_reqs' needs a TLS connection: use a rediss:// URL"):
        RedisBroker.from_url("redis://127.0.0.1:1/0?ssl_cert_reqs=none")
    broker = RedisBroker.from_url("rediss://127.0.0.1:1/0?ssl_cert_reqs=none&ssl_check_hostname=false")
    kwargs = broker.client.connection_pool.connection_kwargs
    assert kwargs["ssl_cert_reqs"] == "none" and kwargs["ssl_check_hostname"] is False


@pytest.mark.parametrize(
    ("make", "url", "match"),
    [
        (RedisBroker, "redis://h/0?visibilty_timeout=3", r"unknown option 'visibilty_timeout' for a redis broker .*allowed: "),
        (RedisResults, "redis://h/0?visibility_timeout=3", r"'visibility_timeout' is an option of the redis broker, not of"),
        (RedisBroker, "redis://h/0?expiry=10", r"'expiry' is an option of the redis results store, not of the broker"),
        (RedisBroker, "redis://h/0?visibility_timeout=soon", r"visibility_timeout='soon' must be a number of seconds"),
        (RedisBroker, "redis://h/0?visibility_timeout=0", r"must be > 0 seconds"),
        (RedisResults, "redis://h/0?expiry=-5", r"must be > 0 seconds"),
        (RedisResults, "redis://h/0?list_limit=many", r"list_limit='many' must be a whole number"),
        (RedisBroker, "redis://h/0?cluster=maybe", r"cluster='maybe' must be true or false"),
        (RedisBroker, "rediss://h/0?ssl_cert_reqs=sometimes", r"must be none, optional or required"),
        (RedisBroker, "unix:///tmp/redis.sock?cluster=true", r"cluster=true does not work with"),
        (RedisBroker, "redis://h/2?cluster=true&db=2", r"Redis Cluster has only database 0"),
        (RedisBroker, "http://h/0", r"takes redis://, rediss:// and unix:// URLs"),
    ],
)
def test_bad_options_are_clear_configuration_errors(make: type, url: str, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        make.from_url(url)


def test_constructor_checks() -> None:
    text_client = redis.Redis(decode_responses=True)
    with pytest.raises(ConfigurationError, match="decode_responses=False"):
        RedisBroker(text_client)
    with pytest.raises(ConfigurationError, match="decode_responses=False"):
        RedisResults(text_client)
    with pytest.raises(ConfigurationError, match="visibility_timeout must be > 0"):
        RedisBroker(redis.Redis(), visibility_timeout=0)
    with pytest.raises(ConfigurationError, match="list_limit must be >= 0"):
        RedisResults(redis.Redis(), list_limit=-1)


@pytest.mark.asyncio
async def test_a_client_of_your_own_is_left_open(redis_server, prefix: str) -> None:
    client = redis.Redis.from_url(redis_server.url)
    broker = RedisBroker(client, prefix=prefix, visibility_timeout=5)
    results = RedisResults(client, prefix=prefix, expiry=None)
    await broker.enqueue("q", [Envelope("a", b"1")])
    await results.set("k", b"v")
    await broker.close()
    await results.close()
    assert await client.ping()  # still usable: whoever made it closes it
    async with RedisResults(client, prefix=prefix) as again:
        assert await again.get("k") == b"v"
    await client.aclose()


@pytest.fixture
def unix_redis(make_redis, tmp_path: Path) -> str:
    path = tmp_path / "redis.sock"
    make_redis(extra=("--unixsocket", str(path), "--unixsocketperm", "700"))
    return f"unix://{path}?db=1"


@pytest.mark.asyncio
async def test_unix_socket_urls(unix_redis: str, prefix: str) -> None:
    broker = RedisBroker.from_url(unix_redis, prefix=prefix)
    results = RedisResults.from_url(unix_redis, prefix=prefix)
    try:
        await broker.enqueue("q", [Envelope("a", b"payload")])
        (got,) = await broker.fetch("q", 5, timeout=1)
        await broker.ack("q", [got])
        assert got.data == b"payload"
        await results.set("k", b"v")
        assert await results.get("k") == b"v"
        assert broker.client.connection_pool.connection_kwargs["db"] == 1
    finally:
        await broker.close()
        await results.close()


@pytest.mark.asyncio
async def test_an_unreachable_server_is_a_broker_error_not_a_hang() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"redis://127.0.0.1:{port}/0?retries=1&socket_connect_timeout=1"
    broker = RedisBroker.from_url(url)
    results = RedisResults.from_url(url)
    async with asyncio.timeout(20):
        with pytest.raises(BrokerError, match=rf"could not publish 1 message\(s\) to queue 'q': .*{port}") as caught:
            await broker.enqueue("q", [Envelope("a", b"1")])
        assert isinstance(caught.value.__cause__, redis.ConnectionError)
        with pytest.raises(BrokerError, match="could not fetch from queue 'q'"):
            await broker.fetch("q", 1, timeout=1)
        with pytest.raises(ResultsError, match="could not read 'k'"):
            await results.get("k")
    await broker.close()
    await results.close()


@pytest_asyncio.fixture
async def silent_server() -> AsyncIterator[int]:
    """A TCP server that accepts connections and never answers: a hung or blackholed Redis."""
    held: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()


@pytest.mark.asyncio
async def test_a_server_that_never_answers_times_out_into_a_broker_error(silent_server: int) -> None:
    url = f"redis://127.0.0.1:{silent_server}/0?retries=0&socket_timeout=0.3"
    broker = RedisBroker.from_url(url)
    async with asyncio.timeout(20):
        with pytest.raises(BrokerError, match=r"could not fetch from queue 'q'.*Timeout"):
            await broker.fetch("q", 1, timeout=5)
    await broker.close()


@pytest.mark.asyncio
async def test_a_redis_error_is_wrapped_with_its_cause(redis_broker: RedisBroker, redis_results_factory) -> None:
    # Someone put a string where the queue's list belongs.
    await redis_broker.client.set(f"{redis_broker._prefix}:{{q}}:pending", b"oops")
    with pytest.raises(BrokerError, match="WRONGTYPE") as caught:
        await redis_broker.fetch("q", 1, timeout=0.1)
    assert isinstance(caught.value.__cause__, redis.ResponseError)
    results = await redis_results_factory()
    await results.client.hset(f"{results._prefix}k", "f", "v")
    with pytest.raises(ResultsError, match="WRONGTYPE"):
        await results.get("k")
    with pytest.raises(NotFoundError):
        await results.get("absent")


@pytest.mark.filterwarnings("ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning")
def test_one_broker_used_from_two_event_loops(redis_server, prefix: str) -> None:
    # asyncio.run twice, or a sync facade's thread: each loop gets connections of its own. (The
    # sockets of a loop that asyncio.run closed cannot be closed cleanly afterwards, whence the
    # ResourceWarnings this test ignores and collects here rather than in a later test.)
    broker = RedisBroker.from_url(redis_server.url, prefix=prefix, visibility_timeout=5)
    asyncio.run(broker.enqueue("q", [Envelope("a", b"1")]))
    got = asyncio.run(broker.fetch("q", 1, timeout=2))
    assert [d.id for d in got] == ["a"]

    async def finish() -> None:
        await broker.ack("q", got)
        assert await broker.get_pending("q") == []
        await broker.close()

    asyncio.run(finish())
    gc.collect()


@pytest.mark.asyncio
async def test_a_wrong_password_is_not_retried_and_says_what_to_fix(redis_server, prefix: str) -> None:
    admin = redis.Redis.from_url(redis_server.url)
    user = f"tq-{prefix}"
    await admin.execute_command("ACL", "SETUSER", user, "on", ">right", "~*", "&*", "+@all")
    url = redis_server.url.replace("redis://", f"redis://{user}:wrong@")
    broker = RedisBroker.from_url(url)  # default retries: the error must end them, not their count
    results = RedisResults.from_url(url)
    with pytest.raises(BrokerError, match=r"refused the credentials.*check the username and password in the URL"):
        await broker.enqueue("q", [Envelope("a", b"1")])
    with pytest.raises(ResultsError, match="refused the credentials"):
        await results.get("k")
    failures = [e for e in await admin.acl_log() if e.get("username") == user and e.get("reason") == "auth"]
    # Redis folds repeats into one entry with a count. One attempt per call made: the enqueue, the
    # broker's registration of the queue for the Inspector (in the background), the store's read.
    assert 1 <= sum(int(e["count"]) for e in failures) <= 3
    await broker.close()
    await results.close()
    await admin.execute_command("ACL", "DELUSER", user)
    await admin.aclose()
