"""The scheduler: fire due ticks exactly once across replicas; settle their outcomes.

Each pass does two things, each in transactions of its own:

1. **Fire.** Claim due schedules (``next_fire_at <= now``) with ``FOR UPDATE SKIP
   LOCKED``: replicas share the schedules and none waits for another. For each, plan
   the ticks to fire (:mod:`gristmill.scheduler.ticks`), publish one run request per
   tick on the bus, then record the fired ticks and move ``next_fire_at`` past ``now``,
   and commit. The publish returns once the request is durable (Kafka acks, or the
   dispatcher's commit in process) *before* the schedule moves on: a crash in between
   leaves the tick due, and it is published again. That second publish makes no second
   job: a tick's job id derives from its idempotency key
   (``schedule:<ws>:<path>:<tick>``), and the dispatcher inserts on conflict do nothing.
2. **Settle.** Claim schedules whose earliest fired run has ended, fold the ended runs
   into the failure/success streaks in tick order, publish the handlers they call
   (``on_failure``, ``on_recovery``, ``on_success``; their job ids derive from the
   tick's key and the handler's kind), and forget those runs.

The scheduler never talks to the dispatcher but through the bus, and never runs user
code. Time comes from an injected clock, so tests can drive it; replicas' clocks are
expected in step (NTP): a replica ahead of the others fires a tick early by its lead.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import asyncpg
import msgspec
import structlog

from gristmill.common import scripts
from gristmill.common.bus.base import Bus
from gristmill.common.contracts.runs import (
    FlowPath,
    RunRequest,
    ScriptPath,
    Trigger,
    TriggerKind,
    encode_run_request,
)
from gristmill.common.contracts.topics import Topic
from gristmill.common.db.pool import Conn
from gristmill.common.db.queries import load_queries
from gristmill.common.errors import GristmillError, NotFound
from gristmill.common.runs import idempotent_job_id
from gristmill.common.schedules import Schedule, retry_policy, schedule_from_row, tick_key
from gristmill.scheduler.outcomes import HandlerCall, Outcome, Streaks, fit_args, settle
from gristmill.scheduler.ticks import plan_ticks

__all__ = ["LOST_AFTER", "PassReport", "Scheduler", "SchedulerSettings", "utc_now"]

_log = structlog.get_logger(__name__)
_Q = load_queries("schedules.sql")
#: Unsettled runs of one schedule read per pass.
_OUTCOMES_PER_PASS: Final = 1000
#: A fired run whose job is still nowhere this long after was lost (its job deleted):
#: it no longer counts as running, and is settled without an outcome.
LOST_AFTER: Final = timedelta(hours=1)
#: Sleep when something is due but another replica holds it.
_BUSY_WAIT_S: Final = 0.05
_MAX_BACKOFF_S: Final = 5.0


def utc_now() -> datetime:
    """The real clock."""
    return datetime.now(UTC)


class SchedulerSettings(msgspec.Struct, frozen=True, kw_only=True):
    #: Longest sleep between passes: new and edited schedules are seen within this.
    interval_s: float = 1.0
    #: A tick at most this old is on time (fires whatever the catch-up policy).
    grace_s: float = 10.0
    #: Schedules claimed per transaction.
    batch_size: int = 100


class PassReport(msgspec.Struct, kw_only=True):
    """What one pass did."""

    fired: int = 0
    handlers: int = 0
    settled: int = 0


class Scheduler:
    """Owns nothing it did not create: pool and bus come from the caller."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        bus: Bus,
        *,
        settings: SchedulerSettings | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._pool = pool
        self._bus = bus
        self._settings = settings or SchedulerSettings()
        self._clock = clock
        #: Counters since start.
        self.fired = 0
        self.handlers = 0

    # -- the loop ----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Pass after pass until ``stop``; a failing pass is retried after a back-off."""
        failures = 0
        while not stop.is_set():
            try:
                await self.run_once()
                delay = await self._idle_delay()
                failures = 0
            except Exception:  # a long-running loop outlives a bad pass; it is logged
                failures += 1
                delay = min(_MAX_BACKOFF_S, 0.1 * 2 ** (failures - 1))
                _log.warning("scheduler.pass_failed", retry_in_s=delay, exc_info=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)

    async def _idle_delay(self) -> float:
        """Seconds to sleep: until the next tick is due, at most ``interval_s``."""
        interval = self._settings.interval_s
        due: datetime | None = await self._pool.fetchval(_Q["next_due"])
        if due is None:
            return interval
        seconds = (due - self._clock()).total_seconds()
        if seconds <= 0:
            return min(_BUSY_WAIT_S, interval)
        return min(seconds + 0.001, interval)

    async def run_once(self) -> PassReport:
        """Fire every due tick, then settle every ended run (batch after batch)."""
        report = PassReport()
        size = self._settings.batch_size
        while True:
            claimed, fired = await self.fire_batch()
            report.fired += fired
            if claimed < size:
                break
        while True:
            claimed, settled, handlers = await self.settle_batch()
            report.settled += settled
            report.handlers += handlers
            if claimed < size:
                break
        return report

    # -- firing ------------------------------------------------------------------------------

    async def fire_batch(self) -> tuple[int, int]:
        """Fire the due ticks of up to ``batch_size`` schedules: (claimed, ticks fired)."""
        settings = self._settings
        async with self._pool.acquire() as conn, conn.transaction():
            now = self._clock()
            rows = await conn.fetch(_Q["claim_due"], now, settings.batch_size)
            if not rows:
                return 0, 0
            requests: list[RunRequest] = []
            updates: list[tuple[Any, ...]] = []
            fires: list[tuple[Schedule, list[datetime], list[Any]]] = []
            for row in rows:
                schedule = schedule_from_row(row)
                try:
                    ticks, next_fire_at = await self._plan(conn, schedule, now)
                except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                    raise  # the batch is retried
                except Exception as exc:  # this schedule is broken; the others go on
                    if not isinstance(exc, GristmillError):
                        _log.exception("scheduler.plan_failed", path=schedule.path)
                    _log.warning(
                        "scheduler.schedule_broken",
                        workspace=schedule.workspace_id,
                        path=schedule.path,
                        error=str(exc),
                    )
                    updates.append(
                        (schedule.workspace_id, schedule.path, None, None, f"cannot fire: {exc}")
                    )
                    continue
                made = [self._tick_request(schedule, tick, now) for tick in ticks]
                requests.extend(made)
                fires.append((schedule, ticks, [request.job_id for request in made]))
                updates.append(
                    (
                        schedule.workspace_id,
                        schedule.path,
                        next_fire_at,
                        ticks[-1] if ticks else None,
                        None,
                    )
                )
            await self._publish(requests)
            for schedule, ticks, job_ids in fires:
                if ticks:
                    await conn.execute(
                        _Q["record_fires"],
                        schedule.workspace_id,
                        schedule.path,
                        ticks,
                        job_ids,
                        now,
                    )
            await conn.executemany(_Q["advance"], updates)
        self.fired += len(requests)
        return len(rows), len(requests)

    async def _plan(
        self, conn: Conn, schedule: Schedule, now: datetime
    ) -> tuple[list[datetime], datetime | None]:
        """The ticks of a claimed schedule to fire now, and its next tick after them."""
        assert schedule.next_fire_at is not None  # claimed because it is due
        plan = plan_ticks(
            schedule.cron(),
            schedule.next_fire_at,
            now,
            grace=timedelta(seconds=self._settings.grace_s),
            policy=schedule.catch_up,
            cap=schedule.catch_up_max,
        )
        ticks = list(plan.fire)
        log = _log.bind(workspace=schedule.workspace_id, path=schedule.path)
        if plan.dropped_missed:
            log.info(
                "scheduler.missed_ticks_dropped",
                policy=schedule.catch_up,
                earliest=_iso(plan.dropped_from),
                latest=_iso(plan.dropped_until),
            )
        if ticks and schedule.no_flow_overlap:
            running = await conn.fetchval(
                _Q["running_fire"], schedule.workspace_id, schedule.path, now - LOST_AFTER
            )
            if running:
                log.info("scheduler.tick_skipped_overlap", ticks=[_iso(t) for t in ticks])
                ticks = []
            else:
                ticks = ticks[-1:]
        return ticks, plan.next_fire_at

    def _tick_request(self, schedule: Schedule, tick: datetime, now: datetime) -> RunRequest:
        key = tick_key(schedule.workspace_id, schedule.path, tick)
        return RunRequest(
            job_id=idempotent_job_id(schedule.workspace_id, key),
            workspace=schedule.workspace_id,
            runnable=_runnable(schedule.is_flow, schedule.script_path),
            requested_by=schedule.edited_by,
            trigger=Trigger(kind=TriggerKind.SCHEDULE, source=schedule.path),
            args=schedule.args,
            idempotency_key=key,
            tag=schedule.tag,
            scheduled_for=tick,
            retry=retry_policy(schedule.retry),
            requested_at=now,
            meta={"schedule": {"path": schedule.path, "tick": _iso(tick)}},
        )

    async def _publish(self, requests: Sequence[RunRequest]) -> None:
        if requests:
            await self._bus.publish_many(
                Topic.RUN_REQUESTS,
                [(request.job_id.bytes, encode_run_request(request)) for request in requests],
            )

    # -- settling ----------------------------------------------------------------------------

    async def settle_batch(self) -> tuple[int, int, int]:
        """Settle the ended runs of up to ``batch_size`` schedules:
        (claimed, runs settled, handlers published)."""
        async with self._pool.acquire() as conn, conn.transaction():
            now = self._clock()
            lost_before = now - LOST_AFTER
            rows = await conn.fetch(_Q["claim_settled"], self._settings.batch_size, lost_before)
            if not rows:
                return 0, 0, 0
            requests: list[RunRequest] = []
            updates: list[tuple[Any, ...]] = []
            settled = 0
            for row in rows:
                schedule = schedule_from_row(row)
                streaks = Streaks(
                    failure_streak=schedule.failure_streak,
                    success_streak=schedule.success_streak,
                    unrecovered_failure=schedule.unrecovered_failure,
                )
                ticks: list[datetime] = []
                calls: list[HandlerCall] = []
                outcomes = await conn.fetch(
                    _Q["fire_outcomes"], schedule.workspace_id, schedule.path, _OUTCOMES_PER_PASS
                )
                for outcome_row in outcomes:
                    if outcome_row["status"] is None:
                        if outcome_row["missing"] and outcome_row["fired_at"] <= lost_before:
                            _log.warning(
                                "scheduler.run_lost",
                                workspace=schedule.workspace_id,
                                path=schedule.path,
                                tick=_iso(outcome_row["tick"]),
                                job_id=str(outcome_row["job_id"]),
                            )
                            ticks.append(outcome_row["tick"])
                            continue
                        break  # still queued or running: later runs wait for it
                    streaks, made = settle(schedule, streaks, _outcome(outcome_row))
                    calls.extend(made)
                    ticks.append(outcome_row["tick"])
                for call in calls:
                    requests.append(await self._handler_request(conn, schedule, call, now))
                settled += len(ticks)
                updates.append(
                    (
                        schedule.workspace_id,
                        schedule.path,
                        ticks,
                        streaks.failure_streak,
                        streaks.success_streak,
                        streaks.unrecovered_failure,
                    )
                )
            await self._publish(requests)
            await conn.executemany(_Q["settle"], updates)
        self.handlers += len(requests)
        return len(rows), settled, len(requests)

    async def _handler_request(
        self, conn: Conn, schedule: Schedule, call: HandlerCall, now: datetime
    ) -> RunRequest:
        args = call.args
        if not call.handler.is_flow:
            try:
                script = await scripts.runnable_by_path(
                    conn, schedule.workspace_id, call.handler.path
                )
            except NotFound:
                pass  # the run fails, saying so, like any run of a missing script
            else:
                args = fit_args(script.schema, args)
        key = f"{tick_key(schedule.workspace_id, schedule.path, call.tick)}:{call.kind}"
        _log.info(
            "scheduler.handler",
            workspace=schedule.workspace_id,
            path=schedule.path,
            handler=call.kind,
            runs=call.handler.path,
            tick=_iso(call.tick),
        )
        return RunRequest(
            job_id=idempotent_job_id(schedule.workspace_id, key),
            workspace=schedule.workspace_id,
            runnable=_runnable(call.handler.is_flow, call.handler.path),
            requested_by=schedule.edited_by,
            trigger=Trigger(kind=TriggerKind.SCHEDULE, source=schedule.path),
            args=args,
            idempotency_key=key,
            requested_at=now,
            meta={
                "schedule": {"path": schedule.path, "tick": _iso(call.tick), "handler": call.kind}
            },
        )


def _runnable(is_flow: bool, path: str) -> ScriptPath | FlowPath:
    return FlowPath(path=path) if is_flow else ScriptPath(path=path)


def _outcome(row: asyncpg.Record) -> Outcome:
    return Outcome(
        tick=row["tick"],
        job_id=row["job_id"],
        status=row["status"],
        result=row["result"],
        error=row["error"],
        started_at=row["started_at"],
    )


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
