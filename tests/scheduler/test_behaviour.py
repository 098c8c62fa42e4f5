"""What a schedule does over time: catch-up after downtime, no overlap, enable and
disable, and its failure and recovery handlers. The clock is the test's."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from gristmill.common.queue import ClaimedJob
from gristmill.common.schedules import EditSchedule, delete_schedule, set_enabled, update_schedule
from gristmill.scheduler.service import LOST_AFTER
from tests.scheduler.conftest import HANDLER, SCRIPT, START, System

MINUTE = timedelta(minutes=1)


def ticks(jobs: list[Any]) -> list[timedelta]:
    """The jobs' ticks, as offsets from the start of the clock."""
    return [job["scheduled_for"] - START for job in jobs]


# -- catch-up --------------------------------------------------------------------------------


async def test_skip_fires_only_the_latest_missed_tick(system: System) -> None:
    await system.schedule(path="u/admin/minutely", schedule="* * * * *", catch_up="skip")
    system.clock.advance(3600 + 30)  # down for an hour: 60 ticks missed
    assert (await system.scheduler().run_once()).fired == 1
    assert ticks(await system.jobs("u/admin/minutely")) == [60 * MINUTE]
    next_fire_at = await system.pool.fetchval("SELECT next_fire_at FROM schedules")
    assert next_fire_at == START + 61 * MINUTE


async def test_skip_fires_no_missed_tick_when_one_is_on_time(system: System) -> None:
    await system.schedule(path="u/admin/minutely", schedule="* * * * *")  # skip: the default
    system.clock.advance(3600 + 5)  # the tick of minute 60 is 5 s old: on time
    assert (await system.scheduler(grace_s=10).run_once()).fired == 1
    assert ticks(await system.jobs("u/admin/minutely")) == [60 * MINUTE]


@pytest.mark.parametrize(("cap", "expected"), [(100, range(1, 61)), (10, range(51, 61))])
async def test_all_fires_every_missed_tick_up_to_the_cap(
    system: System, cap: int, expected: range
) -> None:
    await system.schedule(
        path="u/admin/minutely", schedule="* * * * *", catch_up="all", catch_up_max=cap
    )
    system.clock.advance(3600 + 30)
    assert (await system.scheduler().run_once()).fired == len(expected)
    assert ticks(await system.jobs("u/admin/minutely")) == [n * MINUTE for n in expected]


async def test_ticks_within_the_grace_all_fire_whatever_the_policy(system: System) -> None:
    await system.schedule(catch_up="skip")  # every second
    system.clock.advance(8)  # a slow pass: eight ticks due, all on time
    assert (await system.scheduler(grace_s=10).run_once()).fired == 8


# -- overlap -----------------------------------------------------------------------------------


async def test_no_flow_overlap_skips_ticks_while_the_last_run_is_unfinished(
    system: System,
) -> None:
    await system.schedule(no_flow_overlap=True)
    scheduler = system.scheduler()
    system.clock.advance(1)
    assert (await scheduler.run_once()).fired == 1
    for _ in range(3):  # the run of tick 1 is still queued: ticks 2, 3, 4 are skipped
        system.clock.advance(1)
        assert (await scheduler.run_once()).fired == 0
    assert await system.finish_all(success=True) == 1
    system.clock.advance(1)
    report = await scheduler.run_once()
    assert (report.fired, report.settled) == (1, 1)
    assert ticks(await system.jobs()) == [timedelta(seconds=1), timedelta(seconds=5)]


async def test_no_flow_overlap_catches_up_with_one_run(system: System) -> None:
    await system.schedule(no_flow_overlap=True, catch_up="all")
    system.clock.advance(5)
    assert (await system.scheduler().run_once()).fired == 1
    assert ticks(await system.jobs()) == [timedelta(seconds=5)]


async def test_a_run_whose_job_vanished_blocks_nothing_for_long(system: System) -> None:
    await system.schedule(path="u/admin/minutely", schedule="* * * * *", no_flow_overlap=True)
    scheduler = system.scheduler()
    system.clock.advance(60)
    assert (await scheduler.run_once()).fired == 1
    await system.pool.execute("DELETE FROM jobs")  # e.g. deleted by hand before it ran
    system.clock.advance(60)
    assert (await scheduler.run_once()).fired == 0  # it may still be on its way
    system.clock.advance(LOST_AFTER.total_seconds())
    report = await scheduler.run_once()
    assert (report.fired, report.settled) == (1, 1)  # a new run; the lost one forgotten
    assert await system.pool.fetchval("SELECT count(*) FROM schedule_fires") == 1


async def test_overlapping_runs_are_allowed_by_default(system: System) -> None:
    await system.schedule()
    scheduler = system.scheduler()
    for _ in range(3):
        system.clock.advance(1)
        assert (await scheduler.run_once()).fired == 1
    assert len(await system.jobs()) == 3


# -- enable, disable, edit, delete -------------------------------------------------------------


async def test_a_disabled_schedule_stops_and_resumes_without_backlog(system: System) -> None:
    await system.schedule()
    scheduler = system.scheduler()
    system.clock.advance(1)
    assert (await scheduler.run_once()).fired == 1
    await set_enabled(
        system.pool, "main", "u/admin/every_second", False, edited_by="admin", now=system.clock()
    )
    system.clock.advance(30)
    assert (await scheduler.run_once()).fired == 0
    await set_enabled(
        system.pool, "main", "u/admin/every_second", True, edited_by="admin", now=system.clock()
    )
    assert (await scheduler.run_once()).fired == 0  # nothing missed while disabled runs
    system.clock.advance(1)
    assert (await scheduler.run_once()).fired == 1
    assert ticks(await system.jobs()) == [timedelta(seconds=1), timedelta(seconds=32)]


async def test_an_edited_schedule_fires_on_its_new_expression(system: System) -> None:
    await system.schedule(args={"n": 1})
    scheduler = system.scheduler()
    system.clock.advance(1)
    await scheduler.run_once()
    await update_schedule(
        system.pool,
        "main",
        "u/admin/every_second",
        EditSchedule(schedule="*/10 * * * * *", timezone="UTC", script_path=SCRIPT, args={"n": 2}),
        edited_by="admin",
        now=system.clock(),
    )
    system.clock.advance(18)  # 12:00:19: one tick of the new expression, 12:00:10
    assert (await scheduler.run_once()).fired == 1
    jobs = await system.jobs()
    assert ticks(jobs) == [timedelta(seconds=1), timedelta(seconds=10)]
    assert [job["args"] for job in jobs] == [{"n": 1}, {"n": 2}]


async def test_a_deleted_schedule_fires_no_more(system: System) -> None:
    await system.schedule()
    scheduler = system.scheduler()
    system.clock.advance(1)
    await scheduler.run_once()
    await delete_schedule(system.pool, "main", "u/admin/every_second")
    system.clock.advance(5)
    assert (await scheduler.run_once()).fired == 0
    assert await system.pool.fetchval("SELECT count(*) FROM schedule_fires") == 0


async def test_a_time_zone_moves_the_ticks(system: System) -> None:
    # 9:00 in Paris is 8:00 UTC in winter: the first tick after START (12:00 UTC, Jan 8)
    # is on Jan 9 at 08:00 UTC.
    schedule = await system.schedule(
        path="u/admin/paris", schedule="0 0 9 * * *", timezone="Europe/Paris"
    )
    assert schedule.next_fire_at == START.replace(day=9, hour=8)
    system.clock.advance(20 * 3600)
    assert (await system.scheduler().run_once()).fired == 1
    assert [job["scheduled_for"] for job in await system.jobs("u/admin/paris")] == [
        START.replace(day=9, hour=8)
    ]


# -- handlers ------------------------------------------------------------------------------------


def _is_handler(job: ClaimedJob) -> bool:
    return "handler" in job.meta.get("schedule", {})


async def _run_ticks(system: System, outcomes: str) -> None:
    """One tick per letter: ``F`` its run fails, ``S`` it succeeds (handlers succeed)."""
    scheduler = system.scheduler()
    for outcome in outcomes:
        system.clock.advance(1)
        assert (await scheduler.run_once()).fired == 1
        await system.finish_all(success=lambda job, ok=outcome == "S": ok or _is_handler(job))
        await scheduler.run_once()  # settles the run: publishes the handlers it calls
    await system.finish_all(success=True)


async def test_on_failure_after_n_failures_then_on_recovery_after_a_success(
    system: System,
) -> None:
    await system.schedule(
        on_failure=f"script/{HANDLER}",
        on_failure_times=2,
        on_failure_extra_args={"note": "page someone"},
        on_recovery=f"script/{HANDLER}",
        on_recovery_extra_args={"note": "all good"},
    )
    await _run_ticks(system, "FFFSS")
    failures = await system.handler_jobs("on_failure")
    assert [job["args"]["failed_times"] for job in failures] == [2, 3]  # not exact: 2 and 3
    first = failures[0]
    assert first["runnable_path"] == HANDLER
    # Only the arguments the handler's main takes (the others, e.g. job_id, are left
    # out), the extra arguments, and the defaults of main's other parameters.
    assert set(first["args"]) == {
        "schedule_path",
        "error",
        "failed_times",
        "note",
        "success_times",
    }
    assert first["args"]["success_times"] == 0
    assert first["args"]["schedule_path"] == "u/admin/every_second"
    assert first["args"]["error"]["message"] == "it broke"
    assert first["args"]["note"] == "page someone"
    assert first["meta"]["schedule"]["tick"] == "2024-01-08T12:00:02Z"
    recoveries = await system.handler_jobs("on_recovery")
    assert len(recoveries) == 1  # after the first success only
    assert recoveries[0]["args"]["success_times"] == 1
    assert recoveries[0]["args"]["error"]["name"] == "Boom"
    assert recoveries[0]["args"]["note"] == "all good"
    state = await system.pool.fetchrow(
        "SELECT failure_streak, success_streak, unrecovered_failure FROM schedules"
    )
    assert (state["failure_streak"], state["success_streak"]) == (0, 2)
    assert state["unrecovered_failure"] is None
    assert await system.pool.fetchval("SELECT count(*) FROM schedule_fires") == 0


async def test_on_failure_exact_runs_once_per_streak_and_recovery_waits_for_n_successes(
    system: System,
) -> None:
    await system.schedule(
        on_failure=HANDLER,
        on_failure_times=2,
        on_failure_exact=True,
        on_recovery=HANDLER,
        on_recovery_times=2,
    )
    await _run_ticks(system, "FFFSFFSS")
    assert [job["args"]["failed_times"] for job in await system.handler_jobs("on_failure")] == [
        2,
        2,
    ]
    recoveries = await system.handler_jobs("on_recovery")
    assert [job["args"]["success_times"] for job in recoveries] == [2]
    assert recoveries[0]["meta"]["schedule"]["tick"] == "2024-01-08T12:00:08Z"


async def test_on_success_runs_after_each_success(system: System) -> None:
    await system.schedule(on_success=f"script/{HANDLER}")
    await _run_ticks(system, "SFS")
    assert len(await system.handler_jobs("on_success")) == 2
