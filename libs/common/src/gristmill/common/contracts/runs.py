"""Run requests: what to run, with which arguments, asked by whom, through which trigger."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

import msgspec

__all__ = [
    "FlowPath",
    "FlowPreview",
    "RawCode",
    "RetryPolicy",
    "RunRequest",
    "Runnable",
    "ScriptHash",
    "ScriptPath",
    "Trigger",
    "TriggerKind",
    "decode_run_request",
    "encode_run_request",
]


class TriggerKind(StrEnum):
    API = "api"
    WEBHOOK = "webhook"
    HTTP = "http"
    SCHEDULE = "schedule"
    KAFKA = "kafka"
    WEBSOCKET = "websocket"
    EMAIL = "email"
    FLOW = "flow"
    SCRIPT = "script"
    CLI = "cli"


class ScriptPath(msgspec.Struct, frozen=True, kw_only=True, tag="script_path"):
    """The latest version of the script saved at ``path``."""

    path: str


class ScriptHash(msgspec.Struct, frozen=True, kw_only=True, tag="script_hash"):
    """One immutable script version."""

    hash: str


class FlowPath(msgspec.Struct, frozen=True, kw_only=True, tag="flow_path"):
    path: str


class RawCode(msgspec.Struct, frozen=True, kw_only=True, tag="raw_code"):
    """Code sent with the request (a preview, or an inline flow step)."""

    language: str
    content: str
    path: str | None = None
    lock: str | None = None


class FlowPreview(msgspec.Struct, frozen=True, kw_only=True, tag="flow_preview"):
    """An OpenFlow ``value`` sent with the request."""

    value: dict[str, Any]
    path: str | None = None


Runnable = ScriptPath | ScriptHash | FlowPath | RawCode | FlowPreview


class Trigger(msgspec.Struct, frozen=True, kw_only=True):
    """Which ingress produced the request, and its own identity of the source."""

    kind: TriggerKind
    #: The trigger's path or a description of the source (e.g. ``topic/partition/offset``).
    source: str | None = None


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """Retries after a failure: ``delay_s * multiplier**(attempt-1)``, capped at ``max_delay_s``."""

    max_attempts: int = 1
    delay_s: float = 1.0
    multiplier: float = 2.0
    max_delay_s: float = 3600.0

    def delay_for(self, attempt: int) -> float:
        """Seconds to wait before attempt ``attempt + 1`` after attempt ``attempt`` failed."""
        delay = self.delay_s * self.multiplier ** max(attempt - 1, 0)
        return float(min(delay, self.max_delay_s))


class RunRequest(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, tag="run_request"):
    """A request to run a script or flow. Published on ``Topic.RUN_REQUESTS``.

    ``job_id`` is chosen by the producer so it can answer at once and so that a
    redelivered request inserts nothing new.
    """

    job_id: uuid.UUID
    workspace: str
    runnable: Runnable
    requested_by: str
    trigger: Trigger
    args: dict[str, Any] = msgspec.field(default_factory=dict)
    #: Requests with the same key in a workspace produce one job.
    idempotency_key: str | None = None
    #: Worker tag; ``None`` means the default tag of the runnable's language.
    tag: str | None = None
    #: Higher runs first. 0..1000.
    priority: int = 0
    #: Not before this instant (UTC); ``None`` means now.
    scheduled_for: datetime | None = None
    timeout_s: float | None = None
    retry: RetryPolicy | None = None
    #: Jobs sharing a key run at most ``concurrency_limit`` at a time.
    concurrency_key: str | None = None
    concurrency_limit: int | None = None
    parent_job: uuid.UUID | None = None
    root_job: uuid.UUID | None = None
    flow_step: str | None = None
    requested_at: datetime | None = None
    #: Free-form, stored with the job (e.g. the HTTP route's raw request).
    meta: dict[str, Any] = msgspec.field(default_factory=dict)


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(RunRequest)


def encode_run_request(request: RunRequest) -> bytes:
    return _encoder.encode(request)


def decode_run_request(data: bytes) -> RunRequest:
    """Decode bytes from the bus; raises ``msgspec.ValidationError``/``DecodeError``."""
    return _decoder.decode(data)
