"""rediss://: the whole path (enqueue, the worker's pipelined wait, results) over TLS to a real redis-server."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
import redis.asyncio as redis

from servers import RedisServer, blocked_in_blpop, free_port, need_binary, wait_for_port
from tasqueue import Job, JobCtx, JobStatus, Server
from tasqueue.broker import Envelope
from tasqueue.errors import BrokerError
from tasqueue.testing import eventually, running
from tasqueue_redis import RedisBroker

pytestmark = pytest.mark.asyncio


@dataclass
class TlsRedis:
    server: RedisServer
    port: int
    ca: Path  # the CA that signed the server's certificate
    stranger: Path  # a CA that did not

    def url(self, ca: Path) -> str:
        return f"rediss://127.0.0.1:{self.port}/0?ssl_ca_certs={quote(str(ca))}"


def _ca(openssl: str, folder: Path, name: str) -> tuple[Path, Path]:
    key, cert = folder / f"{name}.key", folder / f"{name}.crt"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return key, cert


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRedis]:
    openssl = need_binary("openssl", "apt-get install openssl")
    folder = tmp_path_factory.mktemp("tls")
    ca_key, ca = _ca(openssl, folder, "tq-test-ca")
    _, stranger = _ca(openssl, folder, "tq-stranger-ca")
    key, csr, cert = folder / "server.key", folder / "server.csr", folder / "server.crt"
    (folder / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    subprocess.run(
        [openssl, "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(csr)],
        check=True, capture_output=True,
    )  # fmt: skip
    subprocess.run(
        [openssl, "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
         "-days", "2", "-extfile", str(folder / "san.cnf"), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    port = free_port()
    tls = (
        "--tls-port", str(port), "--tls-cert-file", str(cert), "--tls-key-file", str(key),
        "--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no",
    )  # fmt: skip
    server = RedisServer(folder / "data", extra=tls)  # the plain port stays, for the test's own checks
    assert server.proc is not None
    wait_for_port(port, server.proc)
    yield TlsRedis(server, port, ca, stranger)
    server.stop()


async def test_jobs_run_over_tls(tls_redis: TlsRedis) -> None:
    url = tls_redis.url(tls_redis.ca)
    plain = redis.Redis.from_url(tls_redis.server.url)

    async with Server(broker=url, results=url) as srv:

        @srv.task("shout")
        async def shout(payload: bytes, ctx: JobCtx) -> bytes:
            return payload.upper()

        first = await srv.enqueue(Job("shout", b"over tls"))
        async with running(srv):
            assert (await srv.wait(first, timeout=10)).status is JobStatus.SUCCESSFUL
            await eventually(lambda: blocked_in_blpop(plain))  # the worker waits on an empty queue: the pipelined wait
            second = await srv.enqueue(Job("shout", b"woken"))
            assert (await srv.wait(second, timeout=10)).status is JobStatus.SUCCESSFUL
        assert await srv.get_result(first) == b"OVER TLS"
        assert await srv.get_result(second) == b"WOKEN"
        assert set(await srv.get_success()) >= {first, second}
    # Every command went over TLS: the plain port saw only this test's own client.
    assert [c["cmd"] for c in await plain.client_list()] == ["client|list"]
    await plain.aclose()


async def _connections(client: redis.Redis) -> int:
    """Connections the server has accepted so far (on every port)."""
    return int((await client.info("stats"))["total_connections_received"])


async def _refused(url: str, plain: redis.Redis) -> tuple[str, int]:
    """Enqueue through ``url`` expecting a BrokerError; its text and how many connections it cost."""
    before = await _connections(plain)
    broker = RedisBroker.from_url(url)  # default retries: the error must end them, not their count
    try:
        with pytest.raises(BrokerError) as caught:
            await broker.enqueue("q", [Envelope("a", b"1")])
    finally:
        await broker.close()
    return str(caught.value), await _connections(plain) - before


async def test_a_server_certificate_from_another_ca_is_refused_at_once_saying_what_to_fix(tls_redis: TlsRedis) -> None:
    plain = redis.Redis.from_url(tls_redis.server.url)
    text, cost = await _refused(tls_redis.url(tls_redis.stranger), plain)
    assert "could not publish 1 message(s)" in text
    assert "certificate verify failed" in text and "ssl_ca_certs" in text
    assert cost <= 3, f"a certificate that does not verify was retried: {cost} connections"
    await plain.aclose()


async def test_tls_to_a_plaintext_port_says_so_at_once(tls_redis: TlsRedis) -> None:
    plain = redis.Redis.from_url(tls_redis.server.url)
    url = f"rediss://127.0.0.1:{tls_redis.server.port}/0?ssl_ca_certs={quote(str(tls_redis.ca))}&socket_connect_timeout=1"
    text, cost = await _refused(url, plain)
    assert f"127.0.0.1:{tls_redis.server.port} answers in plaintext" in text and "use redis://" in text
    # One try and one probe for each command the broker sends (its enqueue, and in the background
    # its registration of the queue for the Inspector).
    assert cost <= 4, f"a plaintext port was tried again and again over TLS: {cost} connections"
    await plain.aclose()


async def test_plaintext_to_a_tls_port_says_so_at_once(tls_redis: TlsRedis) -> None:
    plain = redis.Redis.from_url(tls_redis.server.url)
    text, cost = await _refused(f"redis://127.0.0.1:{tls_redis.port}/0", plain)
    assert f"127.0.0.1:{tls_redis.port} speaks TLS" in text and "rediss://" in text
    assert cost <= 4, f"a TLS port was tried again and again in plaintext: {cost} connections"
    await plain.aclose()
