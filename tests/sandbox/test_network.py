"""Networking of jobs: ``host`` reaches the worker's network, ``none`` nothing at all."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from gristmill.common.contracts.sandbox import SandboxRequest
from gristmill.worker.execution import ExecutorSettings
from gristmill.worker.sandbox import detect
from tests.sandbox.conftest import LIMITS, DataDir, policy, run

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


async def test_a_script_may_ask_for_no_network_and_tighter_limits(
    settings: ExecutorSettings, data_dir: DataDir
) -> None:
    """A script's own sandbox settings apply within the worker group's: it can drop the
    network and lower limits, never raise them."""
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    code = f"""
        import socket

        def main():
            limits = {{}}
            for line in open("/proc/self/limits"):
                for name in ("Max cpu time", "Max open files", "Max processes"):
                    if line.startswith(name):
                        limits[name] = line[len(name):].split()[0]
            try:
                socket.create_connection(("127.0.0.1", {port}), timeout=2).close()
                reached = True
            except OSError:
                reached = False
            return {{"limits": limits, "reached": reached}}
    """
    try:
        baseline, _ = await run(settings, data_dir.workdir(), code)
        asked = SandboxRequest(network="none", cpu_s=7, open_files=100, processes=100_000)
        outcome, logs = await run(settings, data_dir.workdir(), code, sandbox=asked)
    finally:
        server.close()
        await server.wait_closed()
    assert baseline.success, baseline.error
    assert baseline.result["reached"] is True  # the group's network is the host's
    assert outcome.success, (outcome.error, logs.text)
    assert outcome.result["reached"] is False
    assert outcome.result["limits"]["Max cpu time"] == "7"
    assert outcome.result["limits"]["Max open files"] == "100"
    # More processes than the group allows: the group's limit stands.
    assert outcome.result["limits"]["Max processes"] == str(LIMITS.processes)
