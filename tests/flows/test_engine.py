"""The engine with a real Postgres and real workers: sequential steps and their options."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.flows.harness import FlowRunner, py, sh

ADD = "def main(x, y=1):\n    return x + y\n"


def flow(*modules: dict[str, Any], **settings: Any) -> dict[str, Any]:
    return {"modules": list(modules), **settings}


async def test_sequential_steps_pass_results(runner: FlowRunner) -> None:
    done = await runner.run(
        flow(
            py("a", ADD, x="flow_input.n"),
            py("b", ADD, x="previous_result", y="results.a * 10"),
            sh("c", 'echo "{\\"got\\": $1}"', v="results.b"),
            {"id": "d", "value": {"type": "identity"}},
        ),
        {"n": 4},
    )
    assert done.status == "success", done
    assert done.result == {"got": 55}


async def test_steps_are_child_jobs_and_the_flow_is_parked(runner: FlowRunner) -> None:
    job_id = await runner.submit(flow(py("a", ADD, x="1"), py("b", ADD, x="previous_result")))
    done = await runner.drain(job_id)
    assert done.result == 3
    children = await runner.children(job_id)
    assert [(c["flow_step"], c["kind"], c["status"]) for c in children] == [
        ("a", "flowscript", "success"),
        ("b", "flowscript", "success"),
    ]
    root = await runner.pool.fetchval(
        "SELECT count(*) FROM jobs WHERE root_job = $1 AND parent_job = $1", job_id
    )
    assert root == 2
    state = await runner.state(job_id)
    assert state["phase"] == "done"
    assert [m["type"] for m in state["modules"]] == ["Success", "Success"]


async def test_static_inputs_mock_and_skip(runner: FlowRunner) -> None:
    done = await runner.run(
        flow(
            py("a", ADD, x={"type": "static", "value": 40}, y={"type": "static", "value": 2}),
            {**py("b", ADD, x="999"), "skip_if": {"expr": "results.a == 42"}},
            {**py("c", ADD, x="0"), "mock": {"enabled": True, "return_value": {"mocked": 1}}},
            py(
                "d",
                "def main(a, b, c):\n    return [a, b, c]\n",
                a="results.a",
                b="results.b",
                c="results.c",
            ),
        )
    )
    assert done.status == "success", done
    assert done.result == [42, 42, {"mocked": 1}]


async def test_failure_names_the_step_and_runs_the_failure_module(runner: FlowRunner) -> None:
    done = await runner.run(
        flow(
            py("a", ADD, x="1"),
            py("boom", "def main():\n    raise ValueError('bad input')\n"),
            py("never", ADD, x="1"),
            failure_module=py(
                "failure",
                "def main(err):\n    return 'handled ' + err['step_id']\n",
                err="previous_result",
            ),
        )
    )
    assert done.status == "failure"
    assert done.error is not None
    assert done.error["step_id"] == "boom"
    assert "bad input" in done.error["message"]
    state = await runner.state(await _root(runner))
    assert state["failure_module"]["type"] == "Success"
    assert [m.get("type") for m in state["modules"]] == ["Success", "Failure", None]


async def _root(runner: FlowRunner) -> Any:
    return await runner.pool.fetchval(
        "SELECT id FROM jobs WHERE kind IN ('flow', 'flowpreview') AND parent_job IS NULL "
        "ORDER BY created_at DESC LIMIT 1"
    )


async def test_expression_error_fails_the_step_with_expression_and_js_error(
    runner: FlowRunner,
) -> None:
    done = await runner.run(flow(py("a", ADD, x="1"), py("b", ADD, x="results.a.nope.deeper")))
    assert done.status == "failure"
    assert done.error is not None
    assert done.error["name"] == "ExpressionError"
    assert done.error["step_id"] == "b"
    assert "`results.a.nope.deeper`" in done.error["message"]
    assert "TypeError: cannot read property 'deeper' of undefined" in done.error["message"]


async def test_continue_on_error(runner: FlowRunner) -> None:
    done = await runner.run(
        flow(
            {**py("a", "def main():\n    raise RuntimeError('x')\n"), "continue_on_error": True},
            py("b", "def main(e):\n    return e['error']['name']\n", e="previous_result"),
        )
    )
    assert done.status == "success", done
    assert done.result == "RuntimeError"


async def test_retries_then_success(runner: FlowRunner, tmp_path: Any) -> None:
    counter = tmp_path / "count"
    code = (
        "import os\n"
        "def main(path):\n"
        "    n = int(open(path).read()) if os.path.exists(path) else 0\n"
        "    open(path, 'w').write(str(n + 1))\n"
        "    if n < 2:\n"
        "        raise RuntimeError(f'try {n}')\n"
        "    return n\n"
    )
    done = await runner.run(
        flow(
            {
                **py("a", code, path={"type": "static", "value": str(counter)}),
                "retry": {"constant": {"attempts": 3, "seconds": 0}},
            }
        )
    )
    assert done.status == "success", done
    assert done.result == 2
    state = await runner.state(await _root(runner))
    assert state["modules"][0]["retries"] == 2
    assert len(state["modules"][0]["failed_retries"]) == 2


async def test_retry_if_stops_retrying(runner: FlowRunner) -> None:
    done = await runner.run(
        flow(
            {
                **py("a", "def main():\n    raise KeyError('k')\n"),
                "retry": {
                    "constant": {"attempts": 5, "seconds": 0},
                    "retry_if": {"expr": "result.name == 'ValueError'"},
                },
            }
        )
    )
    assert done.status == "failure"
    state = await runner.state(await _root(runner))
    assert state["modules"][0].get("retries", 0) == 0


async def test_stop_after_if(runner: FlowRunner) -> None:
    done = await runner.run(
        flow(
            {**py("a", ADD, x="5"), "stop_after_if": {"expr": "result > 3"}},
            py("b", ADD, x="100"),
        )
    )
    assert done.status == "success"
    assert done.result == 6
    done = await runner.run(
        flow(
            {
                **py("a", ADD, x="5"),
                "stop_after_if": {"expr": "result > 3", "error_message": "too big"},
            },
            py("b", ADD, x="100"),
        )
    )
    assert done.status == "failure"
    assert done.error is not None
    assert done.error["message"] == "too big"


async def test_sleep_is_a_timer_not_a_held_worker(runner: FlowRunner) -> None:
    job_id = await runner.submit(
        flow(
            {**py("a", ADD, x="1"), "sleep": {"type": "static", "value": 1}},
            py("b", ADD, x="previous_result"),
        )
    )
    started = asyncio.get_running_loop().time()
    done = await runner.drain(job_id)
    assert done.result == 3
    assert asyncio.get_running_loop().time() - started >= 1.0


async def test_early_return_is_recorded(runner: FlowRunner) -> None:
    job_id = await runner.submit(
        flow(py("a", ADD, x="1"), py("b", ADD, x="previous_result"), early_return="a")
    )
    done = await runner.drain(job_id)
    assert done.result == 3
    assert (await runner.state(job_id))["early_result"] == 2


async def test_skip_expr_and_unsupported_language(runner: FlowRunner) -> None:
    done = await runner.run(flow(py("a", ADD, x="1"), skip_expr="flow_input.skip"), {"skip": True})
    assert done.status == "success"
    assert done.result is None
    done = await runner.run(
        flow(
            {
                "id": "a",
                "value": {
                    "type": "rawscript",
                    "language": "cobol",
                    "content": "IDENTIFICATION DIVISION.",
                    "input_transforms": {},
                },
            }
        )
    )
    assert done.status == "failure"
    assert done.error is not None
    assert done.error["name"] == "UnsupportedLanguage"


async def test_module_timeout_and_computed_sleep(runner: FlowRunner) -> None:
    done = await runner.run(
        flow(
            {
                **py("slow", "import time\ndef main():\n    time.sleep(20)\n"),
                "timeout": {"type": "javascript", "expr": "flow_input.limit"},
            }
        ),
        {"limit": 1},
    )
    assert done.status == "failure"
    assert done.error is not None
    assert done.error["name"] == "Timeout"
    assert done.error["step_id"] == "slow"
