"""Payloads written by earlier versions must keep decoding (schema evolution)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from gristmill.common.contracts.jobs import (
    ExitReason,
    JobCompleted,
    JobStatus,
    decode_job_error,
    decode_job_event,
    encode_job_event,
)
from gristmill.common.contracts.runs import (
    RawCode,
    RetryPolicy,
    RunRequest,
    ScriptPath,
    Trigger,
    TriggerKind,
    decode_run_request,
    encode_run_request,
)

STORED = Path(__file__).parent / "stored"


def test_minimal_run_request_v1_decodes_with_defaults() -> None:
    request = decode_run_request((STORED / "run_request_v1.json").read_bytes())
    assert request.job_id == uuid.UUID("0b6f3c52-8f7e-4d0e-9a51-3f1c2b7d9e10")
    assert request.runnable == RawCode(
        language="python3", content="def main(x: int):\n    return x * 2\n"
    )
    assert request.trigger == Trigger(kind=TriggerKind.API, source="jobs/run/preview")
    assert request.args == {"x": 21}
    # Fields added later take their defaults.
    assert (request.priority, request.tag, request.retry, request.meta) == (0, None, None, {})


def test_full_run_request_v1_decodes() -> None:
    request = decode_run_request((STORED / "run_request_v1_full.json").read_bytes())
    assert request.runnable == ScriptPath(path="f/billing/invoice")
    assert request.trigger.kind is TriggerKind.KAFKA
    assert request.retry == RetryPolicy(
        max_attempts=3, delay_s=1.5, multiplier=2.0, max_delay_s=60.0
    )
    assert request.scheduled_for == datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
    assert (request.concurrency_key, request.concurrency_limit) == ("billing", 2)
    assert request.meta == {"http": {"method": "POST"}}


def test_run_request_round_trips() -> None:
    request = decode_run_request((STORED / "run_request_v1_full.json").read_bytes())
    assert decode_run_request(encode_run_request(request)) == request


def test_unknown_fields_from_newer_producers_are_ignored() -> None:
    raw = msgspec.json.decode((STORED / "run_request_v1.json").read_bytes())
    raw["a_field_from_the_future"] = {"x": 1}
    request = decode_run_request(msgspec.json.encode(raw))
    assert request.args == {"x": 21}


@pytest.mark.parametrize(
    ("mutation", "message"),
    [
        ({"job_id": "not-a-uuid"}, "$.job_id"),
        ({"runnable": {"type": "teleport"}}, "$.runnable"),
        ({"priority": "high"}, "$.priority"),
        ({"type": "something_else"}, "type"),
    ],
)
def test_malformed_run_requests_fail_with_location(
    mutation: dict[str, object], message: str
) -> None:
    raw = msgspec.json.decode((STORED / "run_request_v1.json").read_bytes())
    raw.update(mutation)
    with pytest.raises(msgspec.ValidationError, match=message.replace("$", r"\$")):
        decode_run_request(msgspec.json.encode(raw))


def test_job_error_v1_decodes() -> None:
    error = decode_job_error((STORED / "job_error_v1.json").read_bytes())
    assert error.name == "ZeroDivisionError"
    assert error.exit_reason is ExitReason.ERROR
    assert (error.location, error.exit_code, error.signal) == ("line 2", 1, None)


def test_job_events_are_a_tagged_union() -> None:
    event = JobCompleted(
        job_id=uuid.uuid4(), status=JobStatus.SUCCESS, at=datetime.now(UTC), duration_ms=3
    )
    data = encode_job_event(event)
    assert b'"type":"completed"' in data
    assert decode_job_event(data) == event


def test_retry_policy_backoff_is_capped() -> None:
    policy = RetryPolicy(max_attempts=10, delay_s=1, multiplier=3, max_delay_s=20)
    assert [policy.delay_for(n) for n in (1, 2, 3, 4)] == [1, 3, 9, 20]


def test_request_defaults_are_omitted_on_the_wire() -> None:
    request = RunRequest(
        job_id=uuid.uuid4(),
        workspace="main",
        runnable=ScriptPath(path="u/admin/x"),
        requested_by="admin",
        trigger=Trigger(kind=TriggerKind.API),
    )
    assert b"priority" not in encode_run_request(request)
