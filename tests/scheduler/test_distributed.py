"""Three ``gristmill scheduler`` processes over Kafka, one SIGKILLed mid-way: every tick
still makes exactly one job, and none is missed."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from gristmill.common import scripts
from gristmill.common.schedules import NewSchedule, create_schedule, set_enabled
from gristmill.common.tokens import ensure_bootstrap
from tests.harness.services import GristmillProcess, wait_until

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

COUNT = "SELECT count(*) FROM jobs WHERE trigger_kind = 'schedule'"


async def test_replicas_over_kafka_survive_a_sigkill(
    spawn: Callable[..., GristmillProcess],
    kafka_broker: str,
    database_url: str,
    pg_pool: asyncpg.Pool,
    tmp_path: Path,
) -> None:
    await ensure_bootstrap(pg_pool, admin_token="distributed-scheduler-token-0123")
    async with pg_pool.acquire() as conn:
        await scripts.create_script(
            conn,
            "main",
            scripts.NewScript(
                path="u/admin/tick", content="def main():\n    return 1\n", language="python3"
            ),
            created_by="admin",
        )
    common = {
        "GRISTMILL_DATABASE_URL": database_url,
        "GRISTMILL_KAFKA_BOOTSTRAP": kafka_broker,
        "GRISTMILL_KAFKA_TOPIC_PREFIX": f"sched-{uuid.uuid4().hex[:8]}.",
        "GRISTMILL_KAFKA_PARTITIONS": "2",
        "GRISTMILL_KAFKA_SESSION_TIMEOUT_MS": "6000",
        "GRISTMILL_DATA_DIR": str(tmp_path / "data"),
        "GRISTMILL_SCHEDULER_INTERVAL_S": "0.2",
    }
    dispatcher = spawn(["dispatcher"], common)
    replicas = [spawn(["scheduler"], common, name=f"scheduler{n}") for n in range(3)]
    await create_schedule(
        pg_pool,
        "main",
        NewSchedule(
            path="u/admin/every_second",
            schedule="* * * * * *",
            timezone="UTC",
            script_path="u/admin/tick",
        ),
        edited_by="admin",
        now=datetime.now(UTC),
    )

    alive = [dispatcher, *replicas]

    async def fired(at_least: int) -> bool:
        for process in alive:
            process.assert_alive()
        count: int = await pg_pool.fetchval(COUNT)
        return count >= at_least

    await wait_until(lambda: fired(4), timeout=60, interval=0.2, what="4 jobs")
    replicas[0].kill()  # SIGKILL, wherever it was (maybe holding the schedule's row)
    alive.remove(replicas[0])
    before_kill = await pg_pool.fetchval(COUNT)
    await wait_until(lambda: fired(before_kill + 5), timeout=60, interval=0.2, what="5 more")
    await set_enabled(
        pg_pool, "main", "u/admin/every_second", False, edited_by="admin", now=datetime.now(UTC)
    )
    await asyncio.sleep(3)  # in flight on the bus: let the dispatcher insert it
    ticks = [
        row["scheduled_for"]
        for row in await pg_pool.fetch(
            "SELECT scheduled_for FROM jobs WHERE trigger_kind = 'schedule' ORDER BY 1"
        )
    ]
    assert len(ticks) >= 9
    assert ticks == [ticks[0] + timedelta(seconds=n) for n in range(len(ticks))], ticks
    for process in alive:
        process.assert_alive()
