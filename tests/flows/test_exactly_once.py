"""Advancement is exactly once; stored states decode; preprocessor and flow limits."""

from __future__ import annotations

import uuid
from typing import Any

from gristmill.common.contracts.runs import TriggerKind
from gristmill.common.flows.engine import run_claimed_flow
from gristmill.common.flows.status import FlowPhase, ModuleStatus, decode_state
from tests.flows.harness import FlowRunner, py

ADD = "def main(x):\n    return x + 1\n"

# A state as this version stores it; later versions must still read it.
STORED_V1: dict[str, Any] = {
    "modules": [
        {
            "id": "a",
            "type": "Success",
            "job": "0b7c0a64-55d5-4c52-9d0e-3f4ad0ec8f11",
            "started_at": "2026-11-25T15:57:04.298503Z",
            "retries": 1,
            "failed_retries": ["9d8c2f7e-7f3e-4c39-8d58-3c5b0b6a3a21"],
        },
        {"id": "l", "type": "InProgress", "count": 3, "started": 2, "finished": 1},
        {"id": "s", "type": "WaitingForEvents", "result": {"k": 1}, "approvers": []},
    ],
    "step": 1,
    "phase": "suspended",
    "failure_module": {"id": "failure"},
    "started_at": "2026-11-25T15:57:04.298056Z",
    "early_result": None,
    "version": 1,
}


def test_a_stored_state_decodes() -> None:
    state = decode_state(STORED_V1)
    assert state.phase is FlowPhase.SUSPENDED
    assert state.modules[0].type is ModuleStatus.SUCCESS
    assert state.modules[0].failed_retries == (uuid.UUID("9d8c2f7e-7f3e-4c39-8d58-3c5b0b6a3a21"),)
    assert state.modules[1].count == 3
    assert state.modules[2].result == {"k": 1}
    assert state.early_result is None
    assert state.failure_module is not None


async def test_a_step_completed_twice_advances_once(runner: FlowRunner) -> None:
    job_id = await runner.submit(
        {"modules": [py("a", ADD, x="1"), py("b", ADD, x="previous_result")]}
    )
    queue = runner.queue
    [flow] = await queue.claim("w1", ["flow"])
    assert await run_claimed_flow(queue, flow)
    assert not await run_claimed_flow(queue, flow)  # its lease is spent: parked
    [step] = await queue.claim("w1", ["python3"])
    assert step.flow_step == "a"
    assert await queue.complete(step, 2)
    assert not await queue.complete(step, 2)  # a retried completion: no second advance
    assert not await queue.complete(step, 99)
    assert await queue.fail(step, _error()) is None
    rows = await runner.pool.fetch(
        "SELECT flow_step FROM jobs WHERE parent_job = $1 ORDER BY created_at", job_id
    )
    assert [r["flow_step"] for r in rows] == ["a", "b"]
    [next_step] = await queue.claim("w2", ["python3"])
    assert next_step.args == {"x": 2}
    assert await queue.complete(next_step, 3)
    done = await runner.wait(job_id, timeout=5)
    assert (done.status, done.result) == ("success", 3)


def _error() -> Any:
    from gristmill.common.contracts.jobs import JobError

    return JobError(name="Late", message="too late")


async def test_preprocessor_reshapes_triggered_runs(runner: FlowRunner) -> None:
    value = {
        "modules": [py("a", ADD, x="flow_input.n")],
        "preprocessor_module": py(
            "preprocessor",
            "def main(body):\n    return {'n': body['count'] * 10}\n",
            body="flow_input.body",
        ),
    }
    job_id = await runner.submit(value, {"body": {"count": 4}}, trigger=TriggerKind.WEBHOOK)
    done = await runner.drain(job_id)
    assert (done.status, done.result) == ("success", 41)
    # Run directly (not by a trigger), the preprocessor does not run.
    done = await runner.run(value, {"n": 1})
    assert (done.status, done.result) == ("success", 2)


async def test_flow_concurrency_limit_holds_while_parked(runner: FlowRunner) -> None:
    value = {
        "modules": [py("slow", "import time\ndef main():\n    time.sleep(0.5)\n    return 1\n")],
        "concurrent_limit": 1,
        "concurrency_key": "one-at-a-time",
    }
    first = await runner.submit(value)
    second = await runner.submit(value)
    import msgspec

    runner.settings = msgspec.structs.replace(runner.settings, concurrency=3)
    # Workers run until each flow ended (whichever got the slot first).
    await runner.drain(first, timeout=30)
    await runner.drain(second, timeout=30)
    spans = await runner.pool.fetch(
        "SELECT c.started_at, c.completed_at FROM jobs j JOIN jobs_completed c ON c.id = j.id "
        "WHERE j.flow_step = 'slow' ORDER BY c.started_at"
    )
    assert len(spans) == 2
    assert spans[0]["completed_at"] <= spans[1]["started_at"]
    assert (
        await runner.pool.fetchval(
            "SELECT running FROM concurrency_slots WHERE key = 'one-at-a-time'"
        )
        == 0
    )
