"""Contracts: every message on the bus and every JSON payload stored in Postgres.

Rules (see docs/adr/0002-contracts.md): structs are frozen and keyword-only; new
fields get defaults; a field's type never changes; tagged unions name their kind.
"""

from gristmill.common.contracts.jobs import (
    JobCompleted,
    JobError,
    JobEvent,
    JobQueued,
    JobStarted,
    JobStatus,
    LogChunk,
)
from gristmill.common.contracts.runs import (
    FlowPath,
    FlowPreview,
    RawCode,
    RetryPolicy,
    Runnable,
    RunRequest,
    ScriptHash,
    ScriptPath,
    Trigger,
    TriggerKind,
)
from gristmill.common.contracts.topics import Topic

__all__ = [
    "FlowPath",
    "FlowPreview",
    "JobCompleted",
    "JobError",
    "JobEvent",
    "JobQueued",
    "JobStarted",
    "JobStatus",
    "LogChunk",
    "RawCode",
    "RetryPolicy",
    "RunRequest",
    "Runnable",
    "ScriptHash",
    "ScriptPath",
    "Topic",
    "Trigger",
    "TriggerKind",
]
