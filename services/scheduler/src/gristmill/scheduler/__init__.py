"""The scheduler: fires cron schedules' ticks (exactly once across replicas) through the bus."""

from gristmill.scheduler.service import PassReport, Scheduler, SchedulerSettings

__all__ = ["PassReport", "Scheduler", "SchedulerSettings"]
