"""Outcomes of scheduled runs: failure and success streaks, and the handlers they call.

Runs are settled in tick order. A failed run (``failure`` or ``canceled``) extends the
failure streak; ``on_failure`` runs when the streak reaches ``on_failure_times`` (and at
every further failure, unless ``on_failure_exact``). After a failure, ``on_recovery``
runs once when ``on_recovery_times`` runs in a row have succeeded. ``on_success`` runs
after every successful run.

Handlers get Windmill's arguments (only those their ``main`` takes are sent, see
``fit_args``), then the ``*_extra_args`` of the schedule:

* ``on_failure``: ``workspace_id``, ``job_id``, ``path`` (the schedule's runnable),
  ``is_flow``, ``schedule_path``, ``error``, ``failed_times``, ``started_at``;
* ``on_recovery``: ``workspace_id``, ``job_id``, ``path``, ``is_flow``,
  ``schedule_path``, ``error`` and ``error_started_at`` (of the last failure),
  ``success_times``, ``success_result``, ``success_started_at``;
* ``on_success``: ``workspace_id``, ``job_id``, ``path``, ``is_flow``,
  ``schedule_path``, ``success_result``, ``success_started_at``.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Final

import msgspec

from gristmill.common.schedules import Handler, Schedule, parse_handler

__all__ = ["HandlerCall", "Outcome", "Streaks", "fit_args", "settle"]

_FAILED: Final = frozenset({"failure", "canceled"})


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    """How one fired run ended."""

    tick: datetime
    job_id: uuid.UUID
    status: str
    result: Any = None
    error: Any = None
    started_at: datetime | None = None

    @property
    def failed(self) -> bool:
        return self.status in _FAILED


class Streaks(msgspec.Struct, frozen=True, kw_only=True):
    """A schedule's settled history, as far as handlers care."""

    failure_streak: int = 0
    success_streak: int = 0
    #: The last failure not yet followed by a recovery: job id, error, start, tick.
    unrecovered_failure: dict[str, Any] | None = None


class HandlerCall(msgspec.Struct, frozen=True, kw_only=True):
    """A handler to run because of the outcome of the run of ``tick``."""

    kind: str
    handler: Handler
    tick: datetime
    args: dict[str, Any]


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _common(schedule: Schedule, outcome: Outcome) -> dict[str, Any]:
    return {
        "workspace_id": schedule.workspace_id,
        "job_id": str(outcome.job_id),
        "path": schedule.script_path,
        "is_flow": schedule.is_flow,
        "schedule_path": schedule.path,
    }


def _call(
    kind: str,
    reference: str,
    outcome: Outcome,
    args: dict[str, Any],
    extra: dict[str, Any] | None,
) -> HandlerCall:
    return HandlerCall(
        kind=kind,
        handler=parse_handler(reference, location=kind),
        tick=outcome.tick,
        args={**args, **(extra or {})},
    )


def settle(
    schedule: Schedule, streaks: Streaks, outcome: Outcome
) -> tuple[Streaks, list[HandlerCall]]:
    """The streaks after ``outcome``, and the handlers it calls."""
    calls: list[HandlerCall] = []
    if outcome.failed:
        failures = streaks.failure_streak + 1
        times = schedule.on_failure_times
        due = failures == times if schedule.on_failure_exact else failures >= times
        if schedule.on_failure and due:
            args = {
                **_common(schedule, outcome),
                "error": outcome.error,
                "failed_times": failures,
                "started_at": _iso(outcome.started_at),
            }
            calls.append(
                _call(
                    "on_failure",
                    schedule.on_failure,
                    outcome,
                    args,
                    schedule.on_failure_extra_args,
                )
            )
        failure = {
            "job_id": str(outcome.job_id),
            "error": outcome.error,
            "started_at": _iso(outcome.started_at),
            "tick": _iso(outcome.tick),
        }
        return Streaks(
            failure_streak=failures, success_streak=0, unrecovered_failure=failure
        ), calls
    successes = streaks.success_streak + 1
    unrecovered = streaks.unrecovered_failure
    if unrecovered is not None and successes >= schedule.on_recovery_times:
        if schedule.on_recovery:
            args = {
                **_common(schedule, outcome),
                "error": unrecovered.get("error"),
                "error_started_at": unrecovered.get("started_at"),
                "success_times": successes,
                "success_result": outcome.result,
                "success_started_at": _iso(outcome.started_at),
            }
            calls.append(
                _call(
                    "on_recovery",
                    schedule.on_recovery,
                    outcome,
                    args,
                    schedule.on_recovery_extra_args,
                )
            )
        unrecovered = None
    if schedule.on_success:
        args = {
            **_common(schedule, outcome),
            "success_result": outcome.result,
            "success_started_at": _iso(outcome.started_at),
        }
        calls.append(
            _call(
                "on_success",
                schedule.on_success,
                outcome,
                args,
                schedule.on_success_extra_args,
            )
        )
    return Streaks(
        failure_streak=0, success_streak=successes, unrecovered_failure=unrecovered
    ), calls


def fit_args(schema: dict[str, Any] | None, args: dict[str, Any]) -> dict[str, Any]:
    """``args`` without those a handler's ``main`` does not take (when its schema says
    which it takes and accepts no others)."""
    if not schema:
        return args
    properties = schema.get("properties")
    if not isinstance(properties, dict) or not properties:
        return args
    if schema.get("additionalProperties") not in (None, False):
        return args
    return {name: value for name, value in args.items() if name in properties}
