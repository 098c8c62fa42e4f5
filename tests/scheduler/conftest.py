"""Fixtures of the scheduler's tests: a database with a script to schedule, a clock the
test drives, and the in-process bus served by a real dispatcher."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from gristmill.common import scripts
from gristmill.common.bus.base import Bus
from gristmill.common.bus.inprocess import InProcessBus
from gristmill.common.contracts.jobs import JobError
from gristmill.common.contracts.topics import Topic
from gristmill.common.queue import ClaimedJob, Queue
from gristmill.common.schedules import NewSchedule, Schedule, create_schedule
from gristmill.common.tokens import ensure_bootstrap
from gristmill.dispatcher.service import Dispatcher
from gristmill.scheduler.service import Scheduler, SchedulerSettings

ADMIN_TOKEN = "scheduler-admin-token-0123456789"
#: A script every schedule of these tests can run.
SCRIPT = "u/admin/tick"
#: A handler taking a few of the arguments handlers get.
HANDLER = "u/admin/handler"
#: The instant the test clocks start at: a whole minute in the past, so that the jobs
#: of its ticks are due at once (the queue claims by the real clock).
START = datetime(2024, 1, 8, 12, 0, 0, tzinfo=UTC)


class FakeClock:
    """A clock the test moves by hand; schedulers read it instead of the real one."""

    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


@dataclass
class System:
    """The database, its queue, and the in-process bus with a dispatcher behind it."""

    pool: asyncpg.Pool
    queue: Queue
    bus: InProcessBus
    clock: FakeClock
    dispatcher: Dispatcher

    def scheduler(
        self,
        pool: asyncpg.Pool | None = None,
        *,
        grace_s: float = 10.0,
        interval_s: float = 0.01,
        bus: Bus | None = None,
    ) -> Scheduler:
        return Scheduler(
            pool or self.pool,
            bus or self.bus,
            settings=SchedulerSettings(interval_s=interval_s, grace_s=grace_s, batch_size=50),
            clock=self.clock,
        )

    async def schedule(self, **fields: object) -> Schedule:
        """Create a schedule at the clock's time (every second on SCRIPT unless told)."""
        values: dict[str, object] = {
            "path": "u/admin/every_second",
            "schedule": "* * * * * *",
            "timezone": "UTC",
            "script_path": SCRIPT,
        }
        values.update(fields)
        return await create_schedule(
            self.pool,
            "main",
            NewSchedule(**values),
            edited_by="admin",
            now=self.clock(),
        )

    async def jobs(self, path: str = "u/admin/every_second") -> list[asyncpg.Record]:
        """Jobs fired by the schedule at ``path`` (not its handlers), by tick."""
        return await self.pool.fetch(
            "SELECT id, scheduled_for, idempotency_key, args FROM jobs "
            "WHERE trigger_kind = 'schedule' AND trigger_source = $1 "
            "AND meta->'schedule'->>'handler' IS NULL ORDER BY scheduled_for",
            path,
        )

    async def handler_jobs(self, kind: str) -> list[asyncpg.Record]:
        return await self.pool.fetch(
            "SELECT id, runnable_path, args, meta FROM jobs "
            "WHERE meta->'schedule'->>'handler' = $1 ORDER BY created_at",
            kind,
        )

    async def finish_all(self, *, success: bool | Callable[[ClaimedJob], bool]) -> int:
        """Run every queued job as a worker would: complete it, or fail it."""
        done = 0
        while True:
            claimed = await self.queue.claim("test-worker", ["python3"], limit=100)
            if not claimed:
                return done
            for job in claimed:
                ok = success if isinstance(success, bool) else success(job)
                if ok:
                    await self.queue.complete(job, {"ok": True, "args": job.args})
                else:
                    await self.queue.fail(
                        job, JobError(name="Boom", message="it broke"), retryable=False
                    )
                done += 1


@pytest.fixture
async def system(pg_pool: asyncpg.Pool) -> AsyncIterator[System]:
    await ensure_bootstrap(pg_pool, admin_token=ADMIN_TOKEN)
    async with pg_pool.acquire() as conn:
        for path, content in (
            (SCRIPT, "def main(n: int = 0):\n    return n\n"),
            (
                HANDLER,
                "def main(schedule_path: str, error: dict = None, failed_times: int = 0,\n"
                "         success_times: int = 0, note: str = ''):\n    return 1\n",
            ),
        ):
            await scripts.create_script(
                conn,
                "main",
                scripts.NewScript(path=path, content=content, language="python3"),
                created_by="admin",
            )
    queue = Queue(pg_pool, notify=False)
    bus = InProcessBus()
    stop = asyncio.Event()
    dispatcher = Dispatcher(pg_pool, queue)
    consumer = asyncio.create_task(
        bus.consume(Topic.RUN_REQUESTS, "dispatcher", dispatcher.handle, stop=stop)
    )
    try:
        yield System(pool=pg_pool, queue=queue, bus=bus, clock=FakeClock(), dispatcher=dispatcher)
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await consumer
