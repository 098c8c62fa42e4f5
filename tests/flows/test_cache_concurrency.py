"""``cache_ttl`` (steps, flows, scripts) and concurrency limits over a time window,
with a real Postgres and real workers."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

from gristmill.common import scripts
from gristmill.common.contracts.runs import RunRequest, ScriptPath, Trigger, TriggerKind
from gristmill.common.flows.view import flow_status_json
from gristmill.common.runs import resolve
from gristmill.common.scripts import NewScript
from tests.flows.harness import WORKSPACE, FlowRunner, py

#: Counts its runs in the file ``path`` (a byte appended per run: safe when runs race)
#: and returns ``x`` with the count.
COUNTED = (
    "def main(path: str, x: int):\n"
    "    with open(path, 'a') as f:\n"
    "        f.write('.')\n"
    "    return {'x': x, 'run': len(open(path).read())}\n"
)


def runs(counter: Path) -> int:
    return len(counter.read_text()) if counter.exists() else 0


def counted_step(id_: str, counter: Path, **extra: Any) -> dict[str, Any]:
    return {
        **py(id_, COUNTED, path={"type": "static", "value": str(counter)}, x="flow_input.x"),
        **extra,
    }


async def _status(runner: FlowRunner, job_id: uuid.UUID) -> dict[str, Any]:
    status = await flow_status_json(runner.pool, WORKSPACE, job_id)
    assert status is not None
    return status


async def test_step_cache_ttl_reuses_a_result_for_the_same_code_and_args(
    runner: FlowRunner, tmp_path: Path
) -> None:
    counter = tmp_path / "count"
    flow = {
        "modules": [
            counted_step("a", counter, cache_ttl=600),
            py("b", "def main(v):\n    return v\n", v="results.a"),
        ]
    }
    first_id = await runner.submit(flow, {"x": 1})
    first = await runner.drain(first_id)
    assert first.status == "success", first
    assert first.result == {"x": 1, "run": 1}
    second_id = await runner.submit(flow, {"x": 1})
    second = await runner.drain(second_id)
    assert second.status == "success", second
    assert second.result == {"x": 1, "run": 1}  # the first run's result, not a new run
    assert runs(counter) == 1
    # The job view says where the result came from; no job ran for the step.
    computed = (await _status(runner, first_id))["modules"][0]
    assert "cached" not in computed
    served = (await _status(runner, second_id))["modules"][0]
    assert served["type"] == "Success"
    assert served["cached"] is True
    assert served["cached_from"] == computed["job"]
    assert served["result"] == {"x": 1, "run": 1}
    assert "job" not in served
    steps = [c["flow_step"] for c in await runner.children(second_id)]
    assert steps == ["b"]
    # Other arguments, or other code: computed again.
    third = await runner.run(flow, {"x": 2})
    assert third.result == {"x": 2, "run": 2}
    changed = {"modules": [counted_step("a", counter, cache_ttl=600)]}
    changed["modules"][0]["value"]["content"] += "# another version\n"
    fourth = await runner.run(changed, {"x": 1})
    assert fourth.result == {"x": 1, "run": 3}
    assert runs(counter) == 3


async def test_step_cache_expires_after_its_ttl(runner: FlowRunner, tmp_path: Path) -> None:
    counter = tmp_path / "count"
    flow = {"modules": [counted_step("a", counter, cache_ttl=1)]}
    first = await runner.run(flow, {"x": 5})
    assert first.result == {"x": 5, "run": 1}
    expires = await runner.pool.fetchval(
        "SELECT expires_at - created_at FROM result_cache WHERE job_id IN "
        "(SELECT id FROM jobs WHERE flow_step = 'a')"
    )
    assert expires.total_seconds() == 1
    await asyncio.sleep(1.5)
    again = await runner.run(flow, {"x": 5})
    assert again.result == {"x": 5, "run": 2}
    assert runs(counter) == 2


async def test_a_failed_step_is_not_cached(runner: FlowRunner, tmp_path: Path) -> None:
    counter = tmp_path / "count"
    failing = (
        "def main(path: str):\n"
        "    with open(path, 'a') as f:\n"
        "        f.write('.')\n"
        "    raise RuntimeError('no')\n"
    )
    flow = {
        "modules": [
            {**py("a", failing, path={"type": "static", "value": str(counter)}), "cache_ttl": 600}
        ]
    }
    assert (await runner.run(flow)).status == "failure"
    assert (await runner.run(flow)).status == "failure"
    assert runs(counter) == 2
    assert await runner.pool.fetchval("SELECT count(*) FROM result_cache") == 0


async def test_flow_cache_ttl_answers_a_run_from_the_cache(
    runner: FlowRunner, tmp_path: Path
) -> None:
    counter = tmp_path / "count"
    flow = {"modules": [counted_step("a", counter)], "cache_ttl": 600}
    first = await runner.run(flow, {"x": 3})
    assert first.result == {"x": 3, "run": 1}
    second_id = await runner.submit(flow, {"x": 3})
    second = await runner.drain(second_id)
    assert second.status == "success", second
    assert second.result == {"x": 3, "run": 1}
    assert runs(counter) == 1
    # Answered when claimed: the flow never started, no step ran.
    assert await runner.children(second_id) == []
    assert await flow_status_json(runner.pool, WORKSPACE, second_id) is None
    logs = await runner.queue.read_logs(second_id)
    assert "served from the cache" in "".join(chunk for _, chunk in logs)
    other = await runner.run(flow, {"x": 4})
    assert other.result == {"x": 4, "run": 2}


async def _save_script(runner: FlowRunner, path: str, content: str, **extra: Any) -> str:
    async with runner.pool.acquire() as conn:
        saved = await scripts.create_script(
            conn,
            WORKSPACE,
            NewScript(path=path, content=content, language="python3", extra=extra),
            created_by="tester",
        )
    return saved.hash


async def _run_script(runner: FlowRunner, path: str, args: dict[str, Any]) -> uuid.UUID:
    request = RunRequest(
        job_id=uuid.uuid4(),
        workspace=WORKSPACE,
        runnable=ScriptPath(path=path),
        requested_by="tester",
        trigger=Trigger(kind=TriggerKind.API),
        args=args,
    )
    async with runner.pool.acquire() as conn, conn.transaction():
        job = await resolve(conn, request)
        await runner.queue.enqueue([job], conn=conn)
    return request.job_id


async def test_script_cache_ttl_is_shared_by_steps_and_direct_runs(
    runner: FlowRunner, tmp_path: Path
) -> None:
    counter = tmp_path / "count"
    await _save_script(runner, "u/tester/counted", COUNTED, cache_ttl=600)
    flow = {
        "modules": [
            {
                "id": "a",
                "value": {
                    "type": "script",
                    "path": "u/tester/counted",
                    "input_transforms": {
                        "path": {"type": "static", "value": str(counter)},
                        "x": {"type": "javascript", "expr": "flow_input.x"},
                    },
                },
            }
        ]
    }
    as_step = await runner.run(flow, {"x": 7})
    assert as_step.result == {"x": 7, "run": 1}
    direct_id = await _run_script(runner, "u/tester/counted", {"path": str(counter), "x": 7})
    direct = await runner.drain(direct_id)
    assert direct.status == "success", direct
    assert direct.result == {"x": 7, "run": 1}
    assert runs(counter) == 1
    logs = "".join(chunk for _, chunk in await runner.queue.read_logs(direct_id))
    assert "served from the cache" in logs
    # A direct run fills the cache too, and a step is served from it.
    fresh_id = await _run_script(runner, "u/tester/counted", {"path": str(counter), "x": 8})
    assert (await runner.drain(fresh_id)).result == {"x": 8, "run": 2}
    step_id = await runner.submit(flow, {"x": 8})
    assert (await runner.drain(step_id)).result == {"x": 8, "run": 2}
    assert (await _status(runner, step_id))["modules"][0]["cached_from"] == str(fresh_id)
    assert runs(counter) == 2


async def _starts(runner: FlowRunner, ids: list[uuid.UUID]) -> list[Any]:
    rows = await runner.pool.fetch(
        "SELECT started_at FROM jobs_completed WHERE id = ANY($1::uuid[]) ORDER BY started_at",
        ids,
    )
    return [row["started_at"] for row in rows]


async def test_flow_concurrency_time_window_limits_starts(runner: FlowRunner) -> None:
    window = 2
    flow = {
        "modules": [py("a", "def main(g):\n    return g\n", g="flow_input.group")],
        "concurrent_limit": 2,
        "concurrency_time_window_s": window,
        "concurrency_key": "$workspace/groups/$args[group]",
    }
    ids = [await runner.submit(flow, {"group": "a"}) for _ in range(4)]
    other = await runner.submit(flow, {"group": "b"})
    done = [await runner.drain(job_id, workers=2) for job_id in [*ids, other]]
    assert [d.result for d in done] == ["a", "a", "a", "a", "b"]
    keys = await runner.pool.fetch(
        "SELECT DISTINCT concurrency_key, concurrency_limit FROM jobs WHERE id = ANY($1::uuid[])",
        [*ids, other],
    )
    assert sorted((k["concurrency_key"], k["concurrency_limit"]) for k in keys) == [
        ("main/groups/a", 2),
        ("main/groups/b", 2),
    ]
    starts = await _starts(runner, ids)
    # At most 2 of the 4 runs of group a start within any 2 s.
    assert (starts[2] - starts[0]).total_seconds() >= window
    assert (starts[3] - starts[1]).total_seconds() >= window


async def test_script_concurrency_settings_apply_to_direct_runs(runner: FlowRunner) -> None:
    window = 1.5
    await _save_script(
        runner,
        "u/tester/limited",
        "def main(n: int):\n    return n\n",
        concurrent_limit=1,
        concurrency_time_window_s=window,
    )
    ids = [await _run_script(runner, "u/tester/limited", {"n": n}) for n in range(3)]
    done = [await runner.drain(job_id, workers=2) for job_id in ids]
    assert sorted(d.result for d in done) == [0, 1, 2]
    keys = await runner.pool.fetch(
        "SELECT concurrency_key, concurrency_limit, meta FROM jobs WHERE id = ANY($1::uuid[])", ids
    )
    assert {(k["concurrency_key"], k["concurrency_limit"]) for k in keys} == {
        ("main/script/u/tester/limited", 1)
    }
    assert all(k["meta"]["concurrency_time_window_s"] == window for k in keys)
    starts = await _starts(runner, ids)
    assert (starts[1] - starts[0]).total_seconds() >= window
    assert (starts[2] - starts[1]).total_seconds() >= window


async def test_step_concurrency_time_window_spaces_loop_iterations(runner: FlowRunner) -> None:
    window = 1
    step = py("s", "def main(i):\n    return i\n", i="flow_input.iter.value")
    step["value"] |= {"concurrent_limit": 1, "concurrency_time_window_s": window}
    flow = {
        "modules": [
            {
                "id": "l",
                "value": {
                    "type": "forloopflow",
                    "iterator": {"type": "javascript", "expr": "[0, 1, 2]"},
                    "skip_failures": False,
                    "parallel": True,
                    "modules": [step],
                },
            }
        ]
    }
    job_id = await runner.submit(flow)
    done = await runner.drain(job_id, workers=3)
    assert done.status == "success", done
    assert done.result == [0, 1, 2]
    steps = await runner.pool.fetch(
        "SELECT id, concurrency_key FROM jobs WHERE root_job = $1 AND flow_step = 's'", job_id
    )
    assert len(steps) == 3
    # The default key: the flow (a preview: its run) and the step.
    assert {s["concurrency_key"] for s in steps} == {f"main/{job_id}/s"}
    starts = await _starts(runner, [s["id"] for s in steps])
    assert (starts[1] - starts[0]).total_seconds() >= window
    assert (starts[2] - starts[1]).total_seconds() >= window


async def test_cache_hits_in_a_raced_parallel_loop_advance_once(
    runner: FlowRunner, tmp_path: Path
) -> None:
    """40 iterations of one cached step with the same arguments, 3 racing workers: the
    first result is reused both before a job is made (the engine) and when a job
    already made is claimed (the queue); every iteration ends exactly once."""
    counter = tmp_path / "count"
    step = {
        **py(
            "s",
            COUNTED,
            path={"type": "static", "value": str(counter)},
            x={"type": "static", "value": 7},
        ),
        "cache_ttl": 600,
    }
    flow = {
        "modules": [
            {
                "id": "l",
                "value": {
                    "type": "forloopflow",
                    "iterator": {"type": "javascript", "expr": "[...Array(40).keys()]"},
                    "skip_failures": False,
                    "parallel": True,
                    "parallelism": {"type": "static", "value": 6},
                    "modules": [step],
                },
            }
        ]
    }
    job_id = await runner.submit(flow)
    done = await runner.drain(job_id, workers=3, timeout=120)
    assert done.status == "success", done
    assert len(done.result) == 40
    assert {r["x"] for r in done.result} == {7}
    jobs = await runner.pool.fetch(
        "SELECT j.id, c.status FROM jobs j JOIN jobs_completed c ON c.id = j.id "
        "WHERE j.root_job = $1 AND j.flow_step = 's'",
        job_id,
    )
    assert {j["status"] for j in jobs} == {"success"}
    served_at_claim = 0
    for job in jobs:
        logs = "".join(chunk for _, chunk in await runner.queue.read_logs(job["id"]))
        served_at_claim += "served from the cache" in logs
    inline = await runner.pool.fetchval(
        "SELECT count(*) FROM flow_status s JOIN jobs j ON j.id = s.id "
        "WHERE j.parent_job = $1 AND s.state -> 'modules' -> 0 ? 'cached_from'",
        job_id,
    )
    # Each iteration got its result one way: a run, a claim served from the cache, or
    # the engine reusing the cache with no job at all.
    assert runs(counter) >= 1
    assert runs(counter) + served_at_claim + inline == 40
    assert len(jobs) + inline == 40
    loop = (await runner.state(job_id))["modules"][0]
    assert (loop["count"], loop["started"], loop["finished"]) == (40, 40, 40)
    assert await runner.pool.fetchval("SELECT count(*) FROM job_queue") == 0
