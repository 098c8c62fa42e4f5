"""The no-op jobs every scenario queues, and a fast bulk loader for big backlogs."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from gristmill.common.queue import NewJob

__all__ = ["TAG", "WORKSPACE", "bulk_load", "clear_queue", "new_job"]

TAG = "bench"
WORKSPACE = "bench"

# Straight into the tables, matching what the queue's insert_jobs writes for a job
# with no code, no limits and the default priority. Used only where the load itself
# is not what is measured (1M rows through the API would take minutes).
_BULK_LOAD = """
WITH j AS (
    INSERT INTO jobs (
        id, workspace_id, kind, runnable_path, args, tag, priority, created_by,
        trigger_kind, scheduled_for
    )
    SELECT gen_random_uuid(), $2, 'script', 'bench/noop', '{}'::jsonb, $3, 0, 'bench',
           'bench', now() - interval '1 hour' + make_interval(secs => g * 0.001)
    FROM generate_series(1, $1::int) AS g
    RETURNING id, workspace_id, tag, priority, scheduled_for
)
INSERT INTO job_queue (id, workspace_id, tag, priority, scheduled_for)
SELECT id, workspace_id, tag, priority, scheduled_for FROM j
"""


def new_job(args: dict[str, Any] | None = None) -> NewJob:
    return NewJob(
        id=uuid.uuid4(),
        workspace=WORKSPACE,
        kind="script",
        tag=TAG,
        created_by="bench",
        trigger_kind="bench",
        runnable_path="bench/noop",
        args=args or {},
    )


async def bulk_load(conn: asyncpg.Pool | asyncpg.Connection, count: int) -> None:
    """Queue ``count`` claimable no-op jobs in one statement."""
    await conn.execute(_BULK_LOAD, count, WORKSPACE, TAG)


async def clear_queue(conn: asyncpg.Pool | asyncpg.Connection) -> None:
    """Empty the queue tables, and whatever references jobs (CASCADE: the schema grows)."""
    await conn.execute("TRUNCATE jobs, job_logs, concurrency_slots CASCADE")
