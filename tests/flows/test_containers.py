"""Loops, branches, sub-flows and cancel, with a real Postgres and real workers."""

from __future__ import annotations

import asyncio
from typing import Any

from gristmill.common.flows import store
from tests.flows.harness import FlowRunner, py, sh

DOUBLE = "def main(v):\n    return v * 2\n"


def flow(*modules: dict[str, Any], **settings: Any) -> dict[str, Any]:
    return {"modules": list(modules), **settings}


def forloop(
    id_: str, iterator: str, *body: dict[str, Any], parallel: bool = False, **extra: Any
) -> dict[str, Any]:
    value: dict[str, Any] = {
        "type": "forloopflow",
        "iterator": {"type": "javascript", "expr": iterator},
        "skip_failures": extra.pop("skip_failures", False),
        "parallel": parallel,
        "modules": list(body),
    }
    if "parallelism" in extra:
        value["parallelism"] = {"type": "static", "value": extra.pop("parallelism")}
    return {"id": id_, "value": value, **extra}


async def test_sequential_for_loop(runner: FlowRunner) -> None:
    done = await runner.run(
        flow(
            forloop("l", "flow_input.items", py("d", DOUBLE, v="flow_input.iter.value")),
            py("sum", "def main(xs):\n    return sum(xs)\n", xs="results.l"),
        ),
        {"items": [1, 2, 3]},
    )
    assert done.status == "success", done
    assert done.result == 12


async def test_parallel_for_loop_keeps_item_order(runner: FlowRunner) -> None:
    done = await runner.run(
        flow(
            forloop(
                "l",
                "[...Array(12).keys()]",
                sh("s", 'echo "$1"', v="flow_input.iter.index * 3"),
                parallel=True,
                parallelism=4,
            )
        ),
        workers=3,
    )
    assert done.status == "success", done
    assert done.result == [i * 3 for i in range(12)]


async def test_loop_body_sees_outer_results_and_skip_failures(runner: FlowRunner) -> None:
    done = await runner.run(
        flow(
            py("base", "def main():\n    return 100\n"),
            forloop(
                "l",
                "[1, 0, 2]",
                py(
                    "div",
                    "def main(a, b):\n    return a // b\n",
                    a="results.base",
                    b="flow_input.iter.value",
                ),
                skip_failures=True,
            ),
        )
    )
    assert done.status == "success", done
    assert done.result == [100, None, 50]


async def test_failed_iteration_fails_the_loop(runner: FlowRunner) -> None:
    done = await runner.run(
        flow(
            forloop(
                "l",
                "[1, 0]",
                py("div", "def main(b):\n    return 1 // b\n", b="flow_input.iter.value"),
            )
        )
    )
    assert done.status == "failure"
    assert done.error is not None
    assert done.error["step_id"] == "div"


async def test_empty_loop_and_identity_only_body(runner: FlowRunner) -> None:
    done = await runner.run(
        flow(
            forloop("e", "[]", py("x", DOUBLE, v="1")),
            forloop("i", "[5, 6]", {"id": "id", "value": {"type": "identity"}}),
        )
    )
    assert done.status == "success", done
    assert done.result == [5, 6]


async def test_while_loop_stops_on_condition(runner: FlowRunner) -> None:
    done = await runner.run(
        flow(
            {
                "id": "w",
                "value": {
                    "type": "whileloopflow",
                    "skip_failures": False,
                    "modules": [
                        py("n", "def main(i):\n    return i * i\n", i="flow_input.iter.index")
                    ],
                },
                "stop_after_if": {"expr": "result >= 9"},
            }
        )
    )
    assert done.status == "success", done
    assert done.result == [0, 1, 4, 9]


async def test_branchone(runner: FlowRunner) -> None:
    def branching(n: int) -> dict[str, Any]:
        return flow(
            py("a", "def main(n):\n    return n\n", n=str(n)),
            {
                "id": "b",
                "value": {
                    "type": "branchone",
                    "branches": [
                        {
                            "expr": "results.a > 10",
                            "modules": [py("big", DOUBLE, v="previous_result")],
                        },
                        {"expr": "results.a > 5", "modules": []},
                    ],
                    "default": [py("small", "def main(v):\n    return -v\n", v="previous_result")],
                },
            },
        )

    assert (await runner.run(branching(20))).result == 40
    assert (await runner.run(branching(7))).result == 7
    assert (await runner.run(branching(1))).result == -1


async def test_branchall(runner: FlowRunner) -> None:
    done = await runner.run(
        flow(
            py("a", "def main():\n    return 3\n"),
            {
                "id": "b",
                "value": {
                    "type": "branchall",
                    "parallel": True,
                    "branches": [
                        {"modules": [py("x", DOUBLE, v="previous_result")]},
                        {
                            "modules": [py("y", "def main():\n    raise ValueError('no')\n")],
                            "skip_failure": True,
                        },
                        {"modules": [{"id": "z", "value": {"type": "identity"}}]},
                    ],
                },
            },
        ),
        workers=2,
    )
    assert done.status == "success", done
    assert done.result[0] == 6
    assert done.result[1]["error"]["name"] == "ValueError"
    assert done.result[2] == 3


async def test_subflow_by_path(runner: FlowRunner) -> None:
    async with runner.pool.acquire() as conn:
        await store.create_flow(
            conn,
            "main",
            {
                "path": "f/test/inner",
                "summary": "inner",
                "value": flow(py("i", DOUBLE, v="flow_input.v")),
                "schema": {"type": "object", "properties": {"v": {"type": "integer"}}},
            },
            user="tester",
        )
        await store.create_flow(
            conn,
            "main",
            {
                "path": "f/test/outer",
                "value": flow(
                    {
                        "id": "sub",
                        "value": {
                            "type": "flow",
                            "path": "f/test/inner",
                            "input_transforms": {
                                "v": {"type": "javascript", "expr": "flow_input.n + 1"}
                            },
                        },
                    },
                    py("after", DOUBLE, v="results.sub"),
                ),
            },
            user="tester",
        )
    done = await runner.run(path="f/test/outer", args={"n": 4})
    assert done.status == "success", done
    assert done.result == 20


async def test_cancel_flow_cancels_running_children(runner: FlowRunner) -> None:
    job_id = await runner.submit(
        flow(
            forloop(
                "l",
                "[1, 2, 3]",
                py("slow", "import time\ndef main():\n    time.sleep(30)\n"),
                parallel=True,
            )
        )
    )
    stop = asyncio.Event()
    from gristmill.common.wakeup import Wakeup
    from gristmill.worker.service import Worker

    async with Wakeup(runner.database_url, runner.settings.tags, poll_interval_s=0.1) as wakeup:
        settings = runner.settings
        task = asyncio.create_task(
            Worker(runner.pool, runner.queue, wakeup, _concurrent(settings, 3)).run(stop)
        )
        try:
            for _ in range(200):
                running = await runner.pool.fetchval(
                    "SELECT count(*) FROM job_queue q JOIN jobs j ON j.id = q.id "
                    "WHERE j.flow_step = 'slow' AND q.running"
                )
                if running == 3:
                    break
                await asyncio.sleep(0.05)
            await runner.queue.cancel(job_id, by="tester", reason="enough")
            done = await runner.wait(job_id, timeout=20)
            assert done.status == "canceled"
            for _ in range(200):
                left = await runner.pool.fetchval("SELECT count(*) FROM job_queue")
                if left == 0:
                    break
                await asyncio.sleep(0.05)
            assert left == 0
            statuses = await runner.pool.fetch(
                "SELECT c.status FROM jobs j JOIN jobs_completed c ON c.id = j.id "
                "WHERE j.flow_step = 'slow'"
            )
            assert [r["status"] for r in statuses] == ["canceled"] * 3
        finally:
            stop.set()
            await task


def _concurrent(settings: Any, n: int) -> Any:
    import msgspec

    return msgspec.structs.replace(settings, concurrency=n)


#: Waits until ``n`` iterations started (a file each in ``folder``): a barrier that
#: only iterations running side by side pass.
BARRIER = (
    "import os, time\n"
    "def main(folder: str, i: int, n: int):\n"
    "    open(os.path.join(folder, str(i)), 'w').close()\n"
    "    deadline = time.monotonic() + 20\n"
    "    while len(os.listdir(folder)) < n:\n"
    "        if time.monotonic() > deadline:\n"
    "            raise RuntimeError(f'iteration {i} ran alone')\n"
    "        time.sleep(0.05)\n"
    "    return i\n"
)


def _parallel_while(folder: str, stop: str, parallelism: int, barrier: int) -> dict[str, Any]:
    return flow(
        {
            "id": "w",
            "value": {
                "type": "whileloopflow",
                "skip_failures": False,
                "parallel": True,
                "parallelism": {"type": "static", "value": parallelism},
                "modules": [
                    py(
                        "b",
                        BARRIER,
                        folder={"type": "static", "value": folder},
                        i="flow_input.iter.index",
                        n=str(barrier),
                    )
                ],
            },
            "stop_after_if": {"expr": stop},
        }
    )


async def test_parallel_whileloop_runs_iterations_side_by_side(
    runner: FlowRunner, tmp_path: Any
) -> None:
    folder = tmp_path / "started"
    folder.mkdir()
    # Three iterations wait for each other: they pass only if they run at once. The
    # first to end stops the loop; the two others still running finish.
    job_id = await runner.submit(_parallel_while(str(folder), "true", 3, 3))
    done = await runner.drain(job_id, workers=3)
    assert done.status == "success", done
    assert done.result == [0, 1, 2]
    iterations = [c for c in await runner.children(job_id) if c["flow_step"] == "w"]
    assert sorted(c["meta"]["index"] for c in iterations) == [0, 1, 2]


async def test_parallel_whileloop_keeps_its_width_until_stopped(
    runner: FlowRunner, tmp_path: Any
) -> None:
    folder = tmp_path / "started"
    folder.mkdir()
    job_id = await runner.submit(_parallel_while(str(folder), "result >= 4", 2, 2))
    done = await runner.drain(job_id, workers=2)
    assert done.status == "success", done
    # Iterations 0..4 ran (4 stopped the loop); one more may have been running then.
    assert done.result[:5] == [0, 1, 2, 3, 4]
    assert done.result == list(range(len(done.result)))
    assert len(done.result) in (5, 6)


async def test_parallel_whileloop_without_parallelism_runs_one_at_a_time(
    runner: FlowRunner,
) -> None:
    done = await runner.run(
        flow(
            {
                "id": "w",
                "value": {
                    "type": "whileloopflow",
                    "skip_failures": False,
                    "parallel": True,
                    "modules": [py("n", "def main(i):\n    return i\n", i="flow_input.iter.index")],
                },
                "stop_after_if": {"expr": "result >= 2"},
            }
        ),
        workers=2,
    )
    assert done.status == "success", done
    assert done.result == [0, 1, 2]
