"""Authentication (user/password, token, nkey) and TLS with a CA: each works, and each mistake is one clear line."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import pytest

from servers import NatsServer, need_binary
from tasqueue.broker import Envelope
from tasqueue.errors import BrokerError, ConfigurationError
from tasqueue_nats import NatsBroker, NatsResults

pytestmark = pytest.mark.asyncio


async def roundtrip(url: str, prefix: str) -> None:
    """An enqueue, a fetch, an ack and a results write through ``url``."""
    broker = NatsBroker(url, prefix=prefix, connect_timeout=2)
    results = NatsResults(url, prefix=prefix, connect_timeout=2)
    try:
        await broker.enqueue("q", [Envelope(os.urandom(8).hex(), b"payload")])
        (got,) = await broker.fetch("q", 1, timeout=5)
        assert got.data == b"payload"
        await broker.ack("q", [got])
        await results.set("k", b"v")
        assert await results.get("k") == b"v"
    finally:
        await broker.close()
        await results.close()


async def refused(url: str, prefix: str, says: str) -> str:
    broker = NatsBroker(url, prefix=prefix, connect_timeout=1)
    try:
        with pytest.raises((BrokerError, ConfigurationError), match=says) as caught:
            await broker.enqueue("q", [Envelope("a", b"")])
    finally:
        await broker.close()
    text = str(caught.value)
    assert "\n" not in text
    return text


async def test_user_and_password(make_nats: Callable[..., NatsServer], prefix: str) -> None:
    server = make_nats(extra='authorization { user: "tq", password: "s3cr3t" }')
    host = f"127.0.0.1:{server.port}"
    await roundtrip(f"nats://tq:s3cr3t@{host}", prefix)
    text = await refused(f"nats://tq:wrong@{host}", prefix, "refused the connection")
    assert "check user:password" in text
    text = await refused(f"nats://{host}", prefix, "refused the connection")
    assert "the server wants some" in text


async def test_token(make_nats: Callable[..., NatsServer], prefix: str) -> None:
    server = make_nats(extra='authorization { token: "t0k3n" }')
    host = f"127.0.0.1:{server.port}"
    await roundtrip(f"nats://t0k3n@{host}", prefix)
    await roundtrip(f"nats://{host}?token=t0k3n", prefix)
    assert "check the token" in await refused(f"nats://{host}?token=nope", prefix, "refused")


async def test_nkey_seed_file(make_nats: Callable[..., NatsServer], prefix: str, tmp_path: Path) -> None:
    import nkeys  # type: ignore[import-untyped]

    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    public = nkeys.from_seed(bytearray(seed)).public_key.decode()
    seed_file = tmp_path / "user.nk"
    seed_file.write_bytes(seed)
    server = make_nats(extra=f'authorization {{ users: [ {{ nkey: "{public}" }} ] }}')
    host = f"127.0.0.1:{server.port}"
    await roundtrip(f"nats://{host}?nkey={quote(str(seed_file))}", prefix)
    other = tmp_path / "other.nk"
    other.write_bytes(nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER))
    assert "nkey/creds file" in await refused(f"nats://{host}?nkey={quote(str(other))}", prefix, "refused")
    await refused(f"nats://{host}?nkey=/nonexistent/user.nk", prefix, "nkey file '/nonexistent/user.nk' does not exist")


def _certs(folder: Path) -> tuple[Path, Path, Path, Path]:
    """A CA, a server certificate it signed for 127.0.0.1 with its key, and a stranger CA."""
    openssl = need_binary("openssl", "apt-get install openssl")

    def ca(name: str) -> tuple[Path, Path]:
        key, cert = folder / f"{name}.key", folder / f"{name}.crt"
        subprocess.run(
            [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
             "-keyout", str(key), "-out", str(cert)],
            check=True, capture_output=True,
        )  # fmt: skip
        return key, cert

    ca_key, ca_cert = ca("tq-ca")
    _, stranger = ca("tq-stranger")
    key, csr, cert = folder / "server.key", folder / "server.csr", folder / "server.crt"
    (folder / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    subprocess.run(
        [openssl, "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(csr)],
        check=True, capture_output=True,
    )  # fmt: skip
    subprocess.run(
        [openssl, "x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key), "-CAcreateserial",
         "-days", "2", "-extfile", str(folder / "san.cnf"), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return ca_cert, cert, key, stranger


async def test_tls_with_a_ca(make_nats: Callable[..., NatsServer], prefix: str, tmp_path: Path) -> None:
    ca, cert, key, stranger = _certs(tmp_path)
    tls = make_nats(extra=f'tls {{ cert_file: "{cert}", key_file: "{key}" }}')
    plain = make_nats()
    await roundtrip(f"tls://127.0.0.1:{tls.port}?tls_ca={quote(str(ca))}", prefix)
    text = await refused(f"tls://127.0.0.1:{tls.port}?tls_ca={quote(str(stranger))}", prefix, "TLS to NATS")
    assert "tls_ca" in text
    await refused(f"tls://127.0.0.1:{tls.port}", prefix, "TLS to NATS")  # the system CAs do not know it
    await refused(f"tls://127.0.0.1:{plain.port}?tls_ca={quote(str(ca))}", prefix, "does not offer TLS: use nats://")
    await refused(f"nats://127.0.0.1:{tls.port}", prefix, "the server requires TLS: use tls://")
    await refused(f"tls://127.0.0.1:{tls.port}?tls_ca=/nonexistent/ca.pem", prefix, "cannot load the TLS files")
