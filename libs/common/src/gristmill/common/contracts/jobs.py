"""Job outcomes and job events (stored in Postgres, streamed to clients)."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

import msgspec

__all__ = [
    "ExitReason",
    "JobCompleted",
    "JobError",
    "JobEvent",
    "JobQueued",
    "JobStarted",
    "JobStatus",
    "LogChunk",
    "decode_job_error",
    "decode_job_event",
    "encode_job_error",
    "encode_job_event",
]


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCESS = "success"
    FAILURE = "failure"
    CANCELED = "canceled"


class ExitReason(StrEnum):
    """Why a finished job stopped."""

    OK = "ok"
    ERROR = "error"
    TIMEOUT = "timeout"
    CANCELED = "canceled"
    SIGNAL = "signal"
    OOM = "oom"
    LOST = "lost"  # worker vanished (zombie) and no retry was left


class JobError(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A structured failure, stored as the job's result when it did not succeed.

    The JSON shape follows the ``{"name", "message", "stack"}`` convention scripts
    and clients expect, with our own fields beside it.
    """

    name: str
    message: str
    stack: str | None = None
    exit_reason: ExitReason = ExitReason.ERROR
    #: Where the error arose: ``line 3`` of a script, a flow step id, an argument name.
    location: str | None = None
    exit_code: int | None = None
    signal: int | None = None


class JobQueued(msgspec.Struct, frozen=True, kw_only=True, tag="queued"):
    job_id: uuid.UUID
    workspace: str
    at: datetime


class JobStarted(msgspec.Struct, frozen=True, kw_only=True, tag="started"):
    job_id: uuid.UUID
    worker: str
    attempt: int
    at: datetime


class JobCompleted(msgspec.Struct, frozen=True, kw_only=True, tag="completed"):
    job_id: uuid.UUID
    status: JobStatus
    at: datetime
    duration_ms: int | None = None


class LogChunk(msgspec.Struct, frozen=True, kw_only=True, tag="log"):
    job_id: uuid.UUID
    seq: int
    text: str


JobEvent = JobQueued | JobStarted | JobCompleted | LogChunk

_error_encoder = msgspec.json.Encoder()
_error_decoder = msgspec.json.Decoder(JobError)
_event_decoder = msgspec.json.Decoder(JobEvent)


def encode_job_error(error: JobError) -> bytes:
    return _error_encoder.encode(error)


def decode_job_error(data: bytes | str) -> JobError:
    return _error_decoder.decode(data)


def encode_job_event(event: JobEvent) -> bytes:
    return _error_encoder.encode(event)


def decode_job_event(data: bytes | str) -> JobEvent:
    event: JobEvent = _event_decoder.decode(data)
    return event
