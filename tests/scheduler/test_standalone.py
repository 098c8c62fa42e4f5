"""A schedule firing every second on a real ``gristmill up``: jobs run and complete, one
per tick, and stop when it is disabled."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from tests.harness.services import GristmillProcess, free_port, wait_http, wait_until

TOKEN = "scheduler-e2e-token-0123456789"


async def _completed(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    response = await client.get(
        "/api/w/main/jobs/completed/list", params={"trigger_kind": "schedule", "per_page": 1000}
    )
    assert response.status_code == 200, response.text
    jobs: list[dict[str, Any]] = response.json()
    return jobs


async def test_every_second_schedule_on_gristmill_up(
    spawn: Callable[..., GristmillProcess],
    database_url: str,
    pg_pool: asyncpg.Pool,
    tmp_path: Path,
) -> None:
    port = free_port()
    process = spawn(
        ["up"],
        {
            "GRISTMILL_DATABASE_URL": database_url,
            "GRISTMILL_HTTP_PORT": str(port),
            "GRISTMILL_ADMIN_TOKEN": TOKEN,
            "GRISTMILL_DATA_DIR": str(tmp_path / "data"),
            "GRISTMILL_WORKERS": "2",
        },
    )
    base = f"http://127.0.0.1:{port}"
    await asyncio.to_thread(wait_http, f"{base}/api/version", process=process)
    async with httpx.AsyncClient(
        base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
    ) as client:
        saved = await client.post(
            "/api/w/main/scripts/create",
            json={
                "path": "u/admin/double",
                "content": "def main(n: int):\n    return n * 2\n",
                "language": "python3",
                "summary": "",
                "description": "",
            },
        )
        assert saved.status_code == 201, saved.text
        created = await client.post(
            "/api/w/main/schedules/create",
            json={
                "path": "u/admin/every_second",
                "schedule": "*/1 * * * * *",
                "timezone": "UTC",
                "script_path": "u/admin/double",
                "is_flow": False,
                "args": {"n": 21},
            },
        )
        assert created.status_code == 201, created.text

        async def three_completed() -> bool:
            process.assert_alive()
            return len(await _completed(client)) >= 3

        await wait_until(three_completed, timeout=60, interval=0.2, what="3 scheduled jobs")
        jobs = await _completed(client)
        assert all(job["success"] for job in jobs), jobs
        assert all(job["result"] == 42 for job in jobs)
        assert {job["schedule_path"] for job in jobs} == {"u/admin/every_second"}
        assert {job["script_path"] for job in jobs} == {"u/admin/double"}

        disabled = await client.post(
            "/api/w/main/schedules/setenabled/u/admin/every_second", json={"enabled": False}
        )
        assert disabled.status_code == 200, disabled.text
        await asyncio.sleep(0.5)  # a pass under way when it was disabled may still commit
        fired = await pg_pool.fetchval("SELECT count(*) FROM jobs WHERE trigger_kind = 'schedule'")
        await asyncio.sleep(2.5)
        assert (
            await pg_pool.fetchval("SELECT count(*) FROM jobs WHERE trigger_kind = 'schedule'")
            == fired
        ), "a disabled schedule fired"

    ticks = [
        row["scheduled_for"]
        for row in await pg_pool.fetch(
            "SELECT scheduled_for FROM jobs WHERE trigger_kind = 'schedule' ORDER BY scheduled_for"
        )
    ]
    # One job per tick, and no tick missed between the first and the last.
    assert ticks == [ticks[0] + timedelta(seconds=n) for n in range(len(ticks))]
    assert all(tick.microsecond == 0 for tick in ticks)
    process.assert_alive()
