"""The progress of a flow job, stored in ``flow_status.state`` (one row per flow job).

Every flow job (a run of a saved or previewed flow, a sub-flow, one loop iteration,
one branch) has a ``FlowState``: which module it is at, each module's state
(Windmill's names: ``WaitingForPriorSteps``, ``WaitingForEvents``,
``InProgress``, ``Success``, ``Failure``), retry counts, loop progress, approvals.
Results of steps that ran as jobs stay in ``jobs_completed``; only results that no
job holds (identity, mock, loops, branch-all, approvals) are kept here.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

import msgspec

__all__ = [
    "FlowPhase",
    "FlowState",
    "ModuleState",
    "ModuleStatus",
    "decode_state",
    "encode_state",
]


class ModuleStatus(StrEnum):
    WAITING = "WaitingForPriorSteps"
    WAITING_FOR_EVENTS = "WaitingForEvents"
    IN_PROGRESS = "InProgress"
    SUCCESS = "Success"
    FAILURE = "Failure"


class FlowPhase(StrEnum):
    #: Starting or advancing modules.
    RUNNING = "running"
    #: Running the preprocessor module (its result becomes the flow input).
    PREPROCESSING = "preprocessing"
    #: Waiting for the timer of a module's ``sleep`` (the job is claimable later).
    SLEEPING = "sleeping"
    #: Waiting for approvals of a suspended module (maybe with a timer).
    SUSPENDED = "suspended"
    #: Running the failure module after a step failed.
    FAILURE_HANDLER = "failure_handler"
    DONE = "done"


class ModuleState(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    id: str
    type: ModuleStatus = ModuleStatus.WAITING
    #: The job running the module now (step job, sub-flow, or chosen branch).
    job: uuid.UUID | None = None
    #: The module's result when no job holds it (identity, mock, loops, approvals...).
    result: Any = msgspec.UNSET
    error: dict[str, Any] | None = None
    skipped: bool = False
    started_at: datetime | None = None
    finished_at: datetime | None = None
    #: Retries made so far, and the jobs that failed before them.
    retries: int = 0
    failed_retries: tuple[uuid.UUID, ...] = ()
    #: Loops and branch-all: items (``None`` for a while loop), iterations started and
    #: ended, most at once; ``stopping``: no more iterations start.
    count: int | None = None
    started: int = 0
    finished: int = 0
    parallelism: int | None = None
    stopping: bool = False
    #: Branch-one: the branch taken (``-1``: the default one).
    branch_chosen: int | None = None
    #: Approvals: until when (UTC) the step waits, who approved.
    suspend_until: datetime | None = None
    approvers: tuple[str, ...] | None = None
    #: Served from the result cache: the job that computed the result (``cache_ttl``).
    cached_from: uuid.UUID | None = None


class FlowState(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    modules: tuple[ModuleState, ...]
    #: Index in ``modules`` of the module being run (``len(modules)``: all ran).
    step: int = 0
    phase: FlowPhase = FlowPhase.RUNNING
    failure_module: ModuleState | None = None
    preprocessor_module: ModuleState | None = None
    started_at: datetime | None = None
    #: The flow input when a preprocessor replaced the arguments.
    flow_input: dict[str, Any] | None = None
    #: The error a failure module is handling (and that the flow ends with).
    error: dict[str, Any] | None = None
    #: Stopped early by a ``stop_after_if`` (a loop iteration stops its loop).
    stopped: bool = False
    skipped: bool = False
    #: The result of the ``early_return`` step, once it ran.
    early_result: Any = msgspec.UNSET
    #: 1 for this layout; a later layout raises it.
    version: int = 1


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(FlowState)


def encode_state(state: FlowState) -> Any:
    """The state as JSON-ready builtins (for a jsonb column)."""
    return msgspec.to_builtins(state)


def decode_state(value: Any) -> FlowState:
    if isinstance(value, bytes | str):
        return _decoder.decode(value)
    return msgspec.convert(value, FlowState)
