"""The ``gristmill`` command: the README's standalone path, burst workers, drain, the broker."""

from __future__ import annotations

import asyncio
import re
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from gristmill.common.bus.kafka import KafkaBus
from gristmill.common.queue import NewJob, Queue
from tests.harness.postgres import temporary_data_dir
from tests.harness.services import GristmillProcess, free_port, wait_http, wait_until


def python_job(code: str, **args: object) -> NewJob:
    return NewJob(
        id=uuid.uuid4(),
        workspace="main",
        kind="preview",
        tag="python3",
        created_by="tester",
        trigger_kind="api",
        language="python3",
        code=code,
        args=dict(args),
    )


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A data dir the embedded server's unprivileged account can reach."""
    with temporary_data_dir("gristmill-up-") as path:
        path.chmod(0o755)
        yield path / "data"


def test_up_on_embedded_postgres_prints_a_working_token(
    spawn: Callable[..., GristmillProcess], data_dir: Path
) -> None:
    """No database configured: ``gristmill up`` starts its own Postgres in the data dir."""
    port = free_port()
    data = data_dir
    process = spawn(["up"], {"GRISTMILL_HTTP_PORT": str(port), "GRISTMILL_DATA_DIR": str(data)})
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/api/version", timeout=120, process=process)
    deadline = time.monotonic() + 30
    while "Admin token" not in process.output() and time.monotonic() < deadline:
        time.sleep(0.05)
    match = re.search(r"Admin token \(shown once.*\): (\S+)", process.output())
    assert match, process.output()
    token = match[1]
    assert (data / "admin-token").read_text().strip() == token
    assert (data / "postgres").is_dir()
    headers = {"Authorization": f"Bearer {token}"}
    job = httpx.post(
        f"{base}/api/w/main/jobs/run/preview",
        headers=headers,
        json={"language": "python3", "content": "def main():\n    return 'embedded'\n"},
    ).text
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        body = httpx.get(
            f"{base}/api/w/main/jobs_u/completed/get_result_maybe/{job}", headers=headers
        ).json()
        if body["completed"]:
            break
        time.sleep(0.05)
    assert body == {"completed": True, "started": True, "success": True, "result": "embedded"}
    assert process.terminate() == 0
    # A restart reuses the cluster and keeps the token; no new token is printed.
    again = spawn(["up"], {"GRISTMILL_HTTP_PORT": str(port), "GRISTMILL_DATA_DIR": str(data)})
    wait_http(f"{base}/api/version", timeout=120, process=again)
    assert httpx.get(f"{base}/api/users/whoami", headers=headers).status_code == 200
    assert again.terminate() == 0
    assert "shown once" not in again.output()


async def test_burst_worker_drains_the_queue_and_exits(
    spawn: Callable[..., GristmillProcess], database_url: str, pg_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    queue = Queue(pg_pool)
    await queue.enqueue(
        [python_job("def main(i: int):\n    return i * i\n", i=i) for i in range(6)]
    )
    worker = spawn(
        ["worker", "--burst"],
        {"GRISTMILL_DATABASE_URL": database_url, "GRISTMILL_DATA_DIR": str(tmp_path / "d")},
    )
    code = await asyncio.to_thread(worker.proc.wait, 60)
    assert code == 0, worker.output()
    results = sorted(r["result"] for r in await pg_pool.fetch("SELECT result FROM jobs_completed"))
    assert results == [0, 1, 4, 9, 16, 25]


async def test_sigterm_lets_the_running_job_finish(
    spawn: Callable[..., GristmillProcess], database_url: str, pg_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    queue = Queue(pg_pool)
    job = python_job("import time\ndef main():\n    time.sleep(2)\n    return 'drained'\n")
    await queue.enqueue([job])
    worker = spawn(
        ["worker"],
        {"GRISTMILL_DATABASE_URL": database_url, "GRISTMILL_DATA_DIR": str(tmp_path / "d")},
    )

    async def running() -> bool:
        worker.assert_alive()
        return bool(await pg_pool.fetchval("SELECT running FROM job_queue WHERE id = $1", job.id))

    await wait_until(running, timeout=30, what="the job to start")
    worker.proc.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(worker.proc.wait, 30)
    assert code == 0, worker.output()
    row = await pg_pool.fetchrow("SELECT status, result FROM jobs_completed WHERE id = $1", job.id)
    assert row is not None
    assert (row["status"], row["result"]) == ("success", "drained")
    assert await pg_pool.fetchval("SELECT count(*) FROM workers") == 0


@pytest.mark.kafka
async def test_broker_command_serves_kafka(spawn: Callable[..., GristmillProcess]) -> None:
    port = free_port()
    broker = spawn(["broker", "--port", str(port)], {})
    bootstrap = f"127.0.0.1:{port}"

    async def accepting() -> bool:
        broker.assert_alive()
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return False
        writer.close()
        await writer.wait_closed()
        return True

    await wait_until(accepting, timeout=30, what="the broker to listen")
    topic = f"cli-broker-{uuid.uuid4().hex[:6]}"
    received: list[bytes] = []
    stop = asyncio.Event()

    async def handler(batch: list) -> None:  # type: ignore[type-arg]
        received.extend(m.value for m in batch)
        if len(received) >= 3:
            stop.set()

    async with KafkaBus(
        bootstrap, client_id="t", session_timeout_ms=6000, heartbeat_interval_ms=1000
    ) as bus:
        await bus.publish_many(topic, [(None, b"a"), (None, b"b"), (None, b"c")])
        await asyncio.wait_for(bus.consume(topic, "g", handler, stop=stop), timeout=60)
    assert sorted(received) == [b"a", b"b", b"c"]
    assert broker.terminate() == 0
