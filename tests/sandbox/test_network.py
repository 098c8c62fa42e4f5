"""Networking of jobs: ``host`` reaches the worker's network, ``none`` nothing at all."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from gristmill.worker.execution import ExecutorSettings
from gristmill.worker.sandbox import detect
from tests.sandbox.conftest import DataDir, policy, run

CONNECT = """
import socket

def main(targets):
    outcome = {}
    for host, port in targets:
        try:
            with socket.create_connection((host, port), timeout=3) as sock:
                sock.sendall(b"GET /probe HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n")
                outcome[f"{host}:{port}"] = sock.recv(200).decode(errors="replace")
        except OSError as exc:
            outcome[f"{host}:{port}"] = type(exc).__name__
    return outcome
"""
#: An address outside this machine: unreachable without a network, whatever the host.
OUTSIDE = ("192.0.2.1", 80)  # TEST-NET-1


@pytest.fixture
async def http_server() -> AsyncIterator[int]:
    """A tiny HTTP server on 127.0.0.1 in this (the worker's) process; its port."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: 13\r\n\r\nfrom-the-host")
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def test_host_network_reaches_a_local_server(
    settings: ExecutorSettings, data_dir: DataDir, http_server: int
) -> None:
    assert settings.sandbox is not None
    assert settings.sandbox.policy.network == "host"
    outcome, _ = await run(
        settings, data_dir.workdir(), CONNECT, args={"targets": [["127.0.0.1", http_server]]}
    )
    assert outcome.error is None, outcome.error
    reply = outcome.result[f"127.0.0.1:{http_server}"]
    assert reply.startswith("HTTP/1.0 200 OK")
    assert reply.endswith("from-the-host")


async def test_no_network_reaches_neither_the_host_nor_outside(
    data_dir: DataDir, http_server: int
) -> None:
    settings = ExecutorSettings(sandbox=detect(policy(network="none")), kill_grace_s=0.5)
    targets = [["127.0.0.1", http_server], ["localhost", http_server], list(OUTSIDE)]
    outcome, _ = await run(settings, data_dir.workdir(), CONNECT, args={"targets": targets})
    assert outcome.error is None, outcome.error
    seen = outcome.result
    # Its loopback is its own: nothing listens there.
    assert seen[f"127.0.0.1:{http_server}"] == "ConnectionRefusedError"
    assert seen[f"localhost:{http_server}"] == "ConnectionRefusedError"
    assert seen["192.0.2.1:80"] == "OSError"  # network unreachable: no route at all

    interfaces, _ = await run(
        settings,
        data_dir.workdir(),
        "import socket\ndef main():\n    return sorted(n for _, n in socket.if_nameindex())\n",
    )
    assert interfaces.result == ["lo"]
