"""A sandboxed job dies with its worker: SIGKILL the worker process, the job goes too.

The "worker" is a child Python process running the executor; the job connects back
to this test over TCP (host networking), so its death shows as the connection
closing, and its processes are looked for in the worker's job cgroups.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from gristmill.worker.sandbox import Sandbox
from gristmill.worker.sandbox.limits import find_cgroup_roots

WORKER = """
import asyncio, sys, uuid
from pathlib import Path
from gristmill.worker.execution import ExecutionRequest, ExecutorSettings, execute
from gristmill.worker.sandbox import detect

JOB = '''
import socket, time
def main(port):
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"started\\\\n")
    time.sleep(300)
'''

async def main(port, workdir):
    async def ignore(text):
        pass
    request = ExecutionRequest(job_id=uuid.uuid4(), language="python3", code=JOB,
        args={"port": port}, env={}, timeout_s=300, workdir=Path(workdir))
    await execute(request, on_log=ignore, cancel=asyncio.Event(),
        settings=ExecutorSettings(sandbox=detect()))

asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
"""


def _processes_in_groups_of(pid: int) -> list[int]:
    marker = f"/gristmill.{pid}/"
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/cgroup") as f:
                    if marker in f.read():
                        found.append(int(name))
            except OSError:
                continue
    return found


async def test_a_job_dies_with_its_worker(tmp_path: Path, sandbox: Sandbox) -> None:
    connected: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await connected.put((reader, writer))

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    workdir = tmp_path / "job"
    workdir.mkdir()
    worker = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(WORKER), str(port), str(workdir)]
    )
    try:
        reader, writer = await asyncio.wait_for(connected.get(), timeout=30)
        assert await asyncio.wait_for(reader.readline(), timeout=10) == b"started\n"
        if sandbox.cgroups is not None:
            assert _processes_in_groups_of(worker.pid)
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
        # The job's end of the connection closes: it is dead.
        assert await asyncio.wait_for(reader.read(), timeout=10) == b""
        writer.close()
        await writer.wait_closed()
        if sandbox.cgroups is not None:
            for _ in range(100):
                if not _processes_in_groups_of(worker.pid):
                    break
                await asyncio.sleep(0.05)
            assert _processes_in_groups_of(worker.pid) == []
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        server.close()
        await server.wait_closed()


def test_groups_left_by_a_dead_worker_are_swept(sandbox: Sandbox) -> None:
    if sandbox.cgroups is None or sandbox.cgroups.memory is None:
        return  # nothing to sweep without cgroups
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid no worker has any more
    stale = Path(sandbox.cgroups.memory).parent / f"gristmill.{gone.pid}"
    group = stale / "job-left-behind"
    group.mkdir(parents=True)
    stuck = subprocess.Popen(["sleep", "60"])
    try:
        (group / "cgroup.procs").write_text(str(stuck.pid))
        find_cgroup_roots(("memory",))  # what a starting worker does
        assert stuck.wait(timeout=10) == -signal.SIGKILL
        for _ in range(100):
            if not stale.exists():
                break
            time.sleep(0.05)
        assert not stale.exists()
    finally:
        if stuck.poll() is None:
            stuck.kill()
            stuck.wait()
