"""OpenFlow documents in the shape Windmill's documentation describes, run end to end.

Each document below is written here from the documented format (the OpenFlow spec and
the flow documentation: sequences of inline scripts, for loops, branches, while loops,
early stop, retries, error handlers, approvals, saved scripts and sub-flows), in YAML as
``wmill`` exports it. Each is saved (which validates it), read back unchanged, run by
path with real workers, and its result checked against what the documented semantics
give.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

from gristmill.common import scripts
from gristmill.common.flows import store
from gristmill.common.flows.engine import resume_step
from gristmill.common.flows.model import decode_document
from gristmill.common.flows.view import flow_status_json
from gristmill.common.scripts import NewScript
from tests.flows.harness import WORKSPACE, FlowRunner

SEQUENCE = """
summary: Greet someone and measure the greeting
description: Two inline scripts (Python, Bash) and an identity step.
value:
  modules:
    - id: a
      summary: Build the greeting
      value:
        type: rawscript
        language: python3
        content: |
          def main(name: str, punctuation: str):
              return f"Hello {name}{punctuation}"
        input_transforms:
          name:
            type: javascript
            expr: flow_input.name
          punctuation:
            type: static
            value: "!"
        lock: ""
        assets: []
    - id: b
      summary: Measure it in Bash
      value:
        type: rawscript
        language: bash
        content: |
          greeting="$1"
          echo "{\\"length\\": ${#greeting}, \\"text\\": \\"$greeting\\"}"
        input_transforms:
          greeting:
            type: javascript
            expr: results.a
    - id: c
      value:
        type: identity
  notes: []
schema:
  $schema: https://json-schema.org/draft/2020-12/schema
  type: object
  properties:
    name:
      type: string
      default: world
  required: []
"""

FOR_LOOP = """
summary: Square every item, in parallel, tolerating failures
value:
  modules:
    - id: loop
      value:
        type: forloopflow
        iterator:
          type: javascript
          expr: flow_input.items
        skip_failures: true
        parallel: true
        parallelism:
          type: static
          value: 2
        modules:
          - id: square
            value:
              type: rawscript
              language: python3
              content: |
                def main(n: int):
                    if n < 0:
                        raise ValueError(f"{n} is negative")
                    return n * n
              input_transforms:
                n:
                  type: javascript
                  expr: flow_input.iter.value
    - id: total
      value:
        type: rawscript
        language: python3
        content: |
          def main(squares: list):
              return {"squares": squares, "sum": sum(s for s in squares if s is not None)}
        input_transforms:
          squares:
            type: javascript
            expr: results.loop
schema:
  type: object
  properties:
    items:
      type: array
      items:
        type: integer
"""

BRANCH_ONE = """
summary: Classify a number
value:
  modules:
    - id: classify
      value:
        type: branchone
        branches:
          - summary: Big numbers
            expr: flow_input.n > 100
            modules:
              - id: big
                value:
                  type: rawscript
                  language: python3
                  content: |
                    def main(n: int):
                        return f"{n} is big"
                  input_transforms:
                    n:
                      type: javascript
                      expr: flow_input.n
          - summary: Even numbers
            expr: flow_input.n % 2 === 0
            modules:
              - id: half
                value:
                  type: rawscript
                  language: python3
                  content: |
                    def main(n: int):
                        return n // 2
                  input_transforms:
                    n:
                      type: javascript
                      expr: flow_input.n
        default:
          - id: odd
            value:
              type: rawscript
              language: bash
              content: |
                n="$1"
                echo "\\"$n is odd\\""
              input_transforms:
                n:
                  type: javascript
                  expr: flow_input.n
schema:
  type: object
  properties:
    n:
      type: integer
"""

BRANCH_ALL = """
summary: Three views of one text, side by side
value:
  modules:
    - id: views
      value:
        type: branchall
        parallel: true
        branches:
          - summary: Upper case
            skip_failure: false
            modules:
              - id: upper
                value:
                  type: rawscript
                  language: python3
                  content: |
                    def main(text: str):
                        return text.upper()
                  input_transforms:
                    text:
                      type: javascript
                      expr: flow_input.text
          - summary: A branch allowed to fail
            skip_failure: true
            modules:
              - id: broken
                value:
                  type: rawscript
                  language: python3
                  content: |
                    def main():
                        raise RuntimeError("this branch always fails")
                  input_transforms: {}
          - summary: Length
            modules:
              - id: length
                value:
                  type: rawscript
                  language: python3
                  content: |
                    def main(text: str):
                        return len(text)
                  input_transforms:
                    text:
                      type: javascript
                      expr: flow_input.text
schema:
  type: object
  properties:
    text:
      type: string
"""

WHILE_LOOP = """
summary: Count until the iteration index reaches flow_input.limit
value:
  modules:
    - id: counting
      value:
        type: whileloopflow
        skip_failures: false
        modules:
          - id: step
            value:
              type: rawscript
              language: python3
              content: |
                def main(i: int):
                    return i * 10
              input_transforms:
                i:
                  type: javascript
                  expr: flow_input.iter.index
      stop_after_if:
        expr: result >= flow_input.limit * 10
        skip_if_stopped: false
schema:
  type: object
  properties:
    limit:
      type: integer
"""

EARLY_STOP = """
summary: Stop early when there is nothing to do; skip and mock steps
value:
  modules:
    - id: fetch
      value:
        type: rawscript
        language: python3
        content: |
          def main(items: list):
              return {"count": len(items), "items": items}
        input_transforms:
          items:
            type: javascript
            expr: flow_input.items
      stop_after_if:
        expr: result.count === 0
        skip_if_stopped: false
    - id: audit
      skip_if:
        expr: results.fetch.count < 3
      value:
        type: rawscript
        language: python3
        content: |
          def main():
              return "audited"
        input_transforms: {}
    - id: notify
      mock:
        enabled: true
        return_value:
          sent: false
      value:
        type: rawscript
        language: python3
        content: |
          def main():
              raise RuntimeError("a mocked step never runs")
        input_transforms: {}
    - id: report
      sleep:
        type: static
        value: 0
      timeout:
        type: static
        value: 30
      value:
        type: rawscript
        language: python3
        content: |
          def main(fetched: dict, audit, notify: dict):
              return {"count": fetched["count"], "audit": audit, "notify": notify}
        input_transforms:
          fetched:
            type: javascript
            expr: results.fetch
          audit:
            type: javascript
            expr: results.audit
          notify:
            type: javascript
            expr: results.notify
schema:
  type: object
  properties:
    items:
      type: array
"""

RETRIES = """
summary: A flaky step retried (constant, then exponential back-off)
value:
  modules:
    - id: flaky
      value:
        type: rawscript
        language: python3
        content: |
          import os
          def main(counter: str):
              n = int(open(counter).read()) if os.path.exists(counter) else 0
              open(counter, "w").write(str(n + 1))
              if n < 2:
                  raise ConnectionError(f"attempt {n + 1} failed")
              return f"succeeded on attempt {n + 1}"
        input_transforms:
          counter:
            type: javascript
            expr: flow_input.counter
      retry:
        constant:
          attempts: 1
          seconds: 0
        exponential:
          attempts: 2
          multiplier: 1
          seconds: 1
          random_factor: 0
schema:
  type: object
  properties:
    counter:
      type: string
"""

ERROR_HANDLER = """
summary: A failing step handled by the error handler
value:
  modules:
    - id: first
      value:
        type: rawscript
        language: python3
        content: |
          def main():
              return 1
        input_transforms: {}
    - id: charge
      value:
        type: rawscript
        language: python3
        content: |
          def main(amount: int):
              raise ValueError(f"card declined for {amount}")
        input_transforms:
          amount:
            type: javascript
            expr: flow_input.amount
      retry:
        constant:
          attempts: 1
          seconds: 0
    - id: never
      value:
        type: identity
  failure_module:
    id: failure
    summary: Error handler
    value:
      type: rawscript
      language: python3
      content: |
        def main(message: str, name: str, step_id: str):
            return {"handled": step_id, "why": f"{name}: {message}"}
      input_transforms:
        message:
          type: javascript
          expr: error.message
        name:
          type: javascript
          expr: error.name
        step_id:
          type: javascript
          expr: error.step_id
schema:
  type: object
  properties:
    amount:
      type: integer
"""

APPROVAL = """
summary: Ask for approval, then use the approver's answer
value:
  modules:
    - id: ask
      value:
        type: rawscript
        language: python3
        content: |
          def main(amount: int):
              return {"question": f"pay {amount}?"}
        input_transforms:
          amount:
            type: javascript
            expr: flow_input.amount
      suspend:
        required_events: 1
        timeout: 120
        resume_form:
          schema:
            type: object
            properties:
              reason:
                type: string
    - id: pay
      value:
        type: rawscript
        language: python3
        content: |
          def main(answer: dict, amount: int):
              return {"paid": amount, "because": answer["reason"]}
        input_transforms:
          answer:
            type: javascript
            expr: resume
          amount:
            type: javascript
            expr: flow_input.amount
schema:
  type: object
  properties:
    amount:
      type: integer
"""

INNER = """
summary: Double a number with a saved script
value:
  modules:
    - id: double
      value:
        type: script
        path: u/examples/double
        input_transforms:
          x:
            type: javascript
            expr: flow_input.x
schema:
  type: object
  properties:
    x:
      type: integer
"""

OUTER = """
summary: Run a saved flow for each number
value:
  modules:
    - id: each
      value:
        type: forloopflow
        iterator:
          type: javascript
          expr: flow_input.numbers
        skip_failures: false
        modules:
          - id: doubled
            value:
              type: flow
              path: f/examples/inner
              input_transforms:
                x:
                  type: javascript
                  expr: flow_input.iter.value
      stop_after_all_iters_if:
        expr: result.length === 0
        skip_if_stopped: true
  early_return: each
schema:
  type: object
  properties:
    numbers:
      type: array
"""


async def _save(runner: FlowRunner, path: str, text: str) -> dict[str, Any]:
    document = decode_document(text.encode(), "application/yaml")
    assert isinstance(document, dict)
    document["path"] = path
    async with runner.pool.acquire() as conn:
        await store.create_flow(conn, WORKSPACE, document, user="tester")
        saved = await store.get_flow(conn, WORKSPACE, path)
    # Stored as sent: every field comes back, the ones this version ignores included.
    assert saved.value == document["value"]
    assert saved.schema == document["schema"]
    return document


async def _status(runner: FlowRunner, job_id: uuid.UUID) -> dict[str, Any]:
    status = await flow_status_json(runner.pool, WORKSPACE, job_id)
    assert status is not None
    return status


async def test_sequence_of_inline_scripts(runner: FlowRunner) -> None:
    document = await _save(runner, "f/examples/sequence", SEQUENCE)
    assert document["value"]["modules"][0]["value"]["assets"] == []
    done = await runner.run(path="f/examples/sequence", args={"name": "Ada"})
    assert done.status == "success", done
    assert done.result == {"length": 10, "text": "Hello Ada!"}
    # The schema's default fills a missing argument.
    done = await runner.run(path="f/examples/sequence")
    assert done.result == {"length": 12, "text": "Hello world!"}


async def test_parallel_for_loop_with_skipped_failures(runner: FlowRunner) -> None:
    await _save(runner, "f/examples/loop", FOR_LOOP)
    job_id = await runner.submit(path="f/examples/loop", args={"items": [1, 2, -1, 3]})
    done = await runner.drain(job_id, workers=2)
    assert done.status == "success", done
    assert done.result == {"squares": [1, 4, None, 9], "sum": 14}
    loop = (await _status(runner, job_id))["modules"][0]
    assert loop["count"] == 4
    assert loop["flow_jobs_success"] == [True, True, False, True]


async def test_branch_one_takes_the_first_true_branch_or_the_default(
    runner: FlowRunner,
) -> None:
    await _save(runner, "f/examples/classify", BRANCH_ONE)
    outcomes = {}
    for n in (500, 42, 7):
        job_id = await runner.submit(path="f/examples/classify", args={"n": n})
        done = await runner.drain(job_id)
        assert done.status == "success", done
        chosen = (await _status(runner, job_id))["modules"][0]["branch_chosen"]
        outcomes[n] = (done.result, chosen)
    assert outcomes == {
        500: ("500 is big", {"type": "branch", "branch": 0}),
        42: (21, {"type": "branch", "branch": 1}),
        7: ("7 is odd", {"type": "default"}),
    }


async def test_branch_all_collects_every_branch(runner: FlowRunner) -> None:
    await _save(runner, "f/examples/views", BRANCH_ALL)
    done = await runner.run(path="f/examples/views", args={"text": "hi"}, workers=2)
    assert done.status == "success", done
    upper, failed, length = done.result
    assert (upper, length) == ("HI", 2)
    assert "this branch always fails" in failed["error"]["message"]


async def test_while_loop_until_stop_after_if(runner: FlowRunner) -> None:
    await _save(runner, "f/examples/counting", WHILE_LOOP)
    done = await runner.run(path="f/examples/counting", args={"limit": 3})
    assert done.status == "success", done
    assert done.result == [0, 10, 20, 30]


async def test_early_stop_skip_and_mock(runner: FlowRunner) -> None:
    await _save(runner, "f/examples/early", EARLY_STOP)
    stopped_id = await runner.submit(path="f/examples/early", args={"items": []})
    stopped = await runner.drain(stopped_id)
    assert stopped.status == "success", stopped
    assert stopped.result == {"count": 0, "items": []}
    assert [c["flow_step"] for c in await runner.children(stopped_id)] == ["fetch"]
    assert (await _status(runner, stopped_id))["stopped_early"] is True
    # Two items: the audit is skipped (its result is the previous one), notify mocked.
    done = await runner.run(path="f/examples/early", args={"items": ["x", "y"]})
    assert done.status == "success", done
    assert done.result == {
        "count": 2,
        "audit": {"count": 2, "items": ["x", "y"]},
        "notify": {"sent": False},
    }
    done = await runner.run(path="f/examples/early", args={"items": [1, 2, 3]})
    assert done.result["audit"] == "audited"


async def test_retries_constant_then_exponential(runner: FlowRunner, tmp_path: Path) -> None:
    await _save(runner, "f/examples/flaky", RETRIES)
    counter = tmp_path / "attempts"
    job_id = await runner.submit(path="f/examples/flaky", args={"counter": str(counter)})
    done = await runner.drain(job_id)
    assert done.status == "success", done
    assert done.result == "succeeded on attempt 3"
    status = await _status(runner, job_id)
    assert status["retry"]["fail_count"] == 2
    assert len(status["modules"][0]["failed_retries"]) == 2


async def test_error_handler_receives_the_error(runner: FlowRunner) -> None:
    await _save(runner, "f/examples/charge", ERROR_HANDLER)
    job_id = await runner.submit(path="f/examples/charge", args={"amount": 30})
    done = await runner.drain(job_id)
    assert done.status == "failure"
    assert done.error is not None
    assert done.error["step_id"] == "charge"
    assert "card declined for 30" in done.error["message"]
    status = await _status(runner, job_id)
    handler = status["failure_module"]
    assert handler["type"] == "Success"
    assert handler["parent_module"] == "charge"
    assert handler["result"]["handled"] == "charge"
    assert "card declined for 30" in handler["result"]["why"]
    assert [m["type"] for m in status["modules"]] == [
        "Success",
        "Failure",
        "WaitingForPriorSteps",
    ]
    assert status["retry"]["fail_count"] == 1


async def test_approval_step_resumes_with_the_payload(runner: FlowRunner) -> None:
    await _save(runner, "f/examples/approve", APPROVAL)
    job_id = await runner.submit(path="f/examples/approve", args={"amount": 12})
    drained = asyncio.create_task(runner.drain(job_id))
    step: uuid.UUID | None = None
    for _ in range(1500):
        state = await runner.state(job_id)
        if state and state.get("phase") == "suspended":
            step = uuid.UUID(state["modules"][0]["job"])
            break
        await asyncio.sleep(0.02)
    assert step is not None, "the approval step never suspended"
    async with runner.pool.acquire() as conn, conn.transaction():
        await resume_step(
            runner.queue,
            conn,
            workspace=WORKSPACE,
            job_id=step,
            resume_id=1,
            approved=True,
            payload={"reason": "within budget"},
            approver="finance",
        )
    done = await drained
    assert done.status == "success", done
    assert done.result == {"paid": 12, "because": "within budget"}
    ask = (await _status(runner, job_id))["modules"][0]
    assert ask["approvers"] == [{"resume_id": 0, "approver": "finance"}]


async def test_saved_script_and_sub_flow_by_path(runner: FlowRunner) -> None:
    async with runner.pool.acquire() as conn:
        await scripts.create_script(
            conn,
            WORKSPACE,
            NewScript(
                path="u/examples/double",
                language="python3",
                content="def main(x: int):\n    return x * 2\n",
            ),
            created_by="tester",
        )
    await _save(runner, "f/examples/inner", INNER)
    await _save(runner, "f/examples/outer", OUTER)
    job_id = await runner.submit(path="f/examples/outer", args={"numbers": [1, 5, 10]})
    done = await runner.drain(job_id)
    assert done.status == "success", done
    assert done.result == [2, 10, 20]
    early = await runner.pool.fetchval(
        "SELECT state -> 'early_result' FROM flow_status WHERE id = $1", job_id
    )
    assert early == [2, 10, 20]
    # An empty list: stop_after_all_iters_if stops the flow, skipped.
    empty = await runner.run(path="f/examples/outer", args={"numbers": []})
    assert empty.status == "success", empty
    assert empty.result is None
