"""Postgres killed and restarted under load: services reconnect and nothing accepted is lost."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import httpx

from gristmill.common.db.pool import connect
from tests.harness.postgres import RestartablePg
from tests.harness.services import GristmillProcess, free_port, wait_http, wait_until

TOKEN = "chaos-token-0123456789"
REQUESTS = 150


async def test_every_accepted_request_becomes_exactly_one_job(
    spawn: Callable[..., GristmillProcess], restartable_pg: RestartablePg, tmp_path: Path
) -> None:
    port = free_port()
    process = spawn(
        ["up"],
        {
            "GRISTMILL_DATABASE_URL": restartable_pg.database_url,
            "GRISTMILL_HTTP_PORT": str(port),
            "GRISTMILL_ADMIN_TOKEN": TOKEN,
            "GRISTMILL_DATA_DIR": str(tmp_path / "data"),
            "GRISTMILL_WORKERS": "2",
            "GRISTMILL_POLL_INTERVAL_S": "0.2",
            "GRISTMILL_HEARTBEAT_INTERVAL_S": "0.5",
        },
    )
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/api/version", process=process)
    body = {"language": "python3", "content": "def main(i: int):\n    return i\n"}
    rejected = 0
    accepted: dict[int, str] = {}
    gate = asyncio.Semaphore(8)

    async def submit(client: httpx.AsyncClient, i: int) -> None:
        nonlocal rejected
        while True:
            async with gate:
                try:
                    response = await client.post(
                        "/api/w/main/jobs/run/preview",
                        params={"idempotency_key": f"load-{i}"},
                        json={**body, "args": {"i": i}},
                    )
                except httpx.TransportError:
                    response = None
            if response is not None and response.status_code == 201:
                accepted[i] = response.text
                return
            if response is not None:
                # Only "unavailable" is acceptable while the database is away.
                assert response.status_code == 503, response.text
            rejected += 1
            await asyncio.sleep(0.1)

    async with httpx.AsyncClient(
        base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
    ) as client:
        load = asyncio.gather(*(submit(client, i) for i in range(REQUESTS)))
        await wait_until(lambda: _at_least(accepted, 20), timeout=30, what="load to start")
        await asyncio.to_thread(restartable_pg.server.kill)
        await asyncio.sleep(1.0)
        await asyncio.to_thread(restartable_pg.server.start)
        await asyncio.wait_for(load, timeout=120)

    assert len(accepted) == REQUESTS
    assert rejected > 0, "the database outage was never observed; the test proved nothing"
    conn = await connect(restartable_pg.database_url)
    try:

        async def all_done() -> bool:
            done = await conn.fetchval("SELECT count(*) FROM jobs_completed")
            return bool(done == REQUESTS)

        await wait_until(all_done, timeout=90, interval=0.2, what="every job to complete")
        assert await conn.fetchval("SELECT count(*) FROM jobs") == REQUESTS
        rows = await conn.fetch("SELECT id::text, status, result FROM jobs_completed")
        assert {r["status"] for r in rows} == {"success"}
        by_id = {r["id"]: r["result"] for r in rows}
        assert {by_id[job_id] for job_id in accepted.values()} == set(range(REQUESTS))
    finally:
        await conn.close()
    process.assert_alive()


async def _at_least(accepted: dict[int, str], count: int) -> bool:
    return len(accepted) >= count
