"""A worker dedicated to a whole flow: real Postgres queue, real worker loops, real
sandbox. The flow's step jobs carry the flow's tag, the dedicated worker pre-warms one
interpreter per Python step of the flow's current version and runs every step
(non-Python ones cold), an ordinary worker never claims them, and a new version of
the flow is warmed in place of the old one."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from gristmill.cli.serve_worker import dedicated_settings, worker_settings
from gristmill.common import scripts
from gristmill.common.contracts.runs import FlowPath, RunRequest, Trigger, TriggerKind
from gristmill.common.errors import InvalidRequest
from gristmill.common.flows import store
from gristmill.common.flows.engine import on_child_finished
from gristmill.common.queue import Queue
from gristmill.common.runs import resolve
from gristmill.common.settings import load_settings
from gristmill.common.wakeup import Wakeup
from gristmill.worker.dedicated import DedicatedSettings
from gristmill.worker.execution import ExecutorSettings
from gristmill.worker.service import Worker, WorkerSettings
from tests.dedicated.conftest import DataDir
from tests.harness.services import GristmillProcess

WORKSPACE = "main"
FLOW = "f/hot/pipeline"
TAG = f"{WORKSPACE}:flow/{FLOW}"
#: The warm interpreter, as the job's process sees it: its parent's pid (in the
#: sandbox's namespace) and start time (clock ticks since boot), which no other
#: process shares.
PARENT = """
import os

def parent():
    with open(f"/proc/{os.getppid()}/stat", "rb") as f:
        raw = f.read()
    return [os.getppid(), int(raw[raw.rfind(b")") + 2 :].split()[19])]
"""
PLUS_ONE = PARENT + "\ndef main(x: int):\n    return {'value': x + 1, 'parent': parent()}\n"
TIMES_TEN = PARENT + "\ndef main(x: int):\n    return {'value': x * 10, 'parent': parent()}\n"
TRIPLE = PARENT + "\ndef main(x: int):\n    return {'value': x * 3, 'parent': parent()}\n"
BASH = 'echo "bash $1"\n'


def _js(expr: str) -> dict[str, Any]:
    return {"type": "javascript", "expr": expr}


def _raw(step_id: str, code: str, x: str, language: str = "python3") -> dict[str, Any]:
    return {
        "id": step_id,
        "value": {
            "type": "rawscript",
            "language": language,
            "content": code,
            "input_transforms": {"x": _js(x)},
        },
    }


def _pipeline(first: str = PLUS_ONE) -> dict[str, Any]:
    """Python steps (two with the same code), a for loop and a branch of Python steps,
    a saved script by path, and a bash step."""
    return {
        "modules": [
            _raw("a", first, "flow_input.x"),
            _raw("a2", first, "results.a.value"),
            {
                "id": "loop",
                "value": {
                    "type": "forloopflow",
                    "iterator": _js("[1, 2, 3]"),
                    "modules": [_raw("inner", TIMES_TEN, "flow_input.iter.value")],
                },
            },
            {
                "id": "branch",
                "value": {
                    "type": "branchone",
                    "branches": [{"expr": "false", "modules": []}],
                    "default": [_raw("chosen", TIMES_TEN, "results.a2.value")],
                },
            },
            {
                "id": "c",
                "value": {
                    "type": "script",
                    "path": "u/admin/triple",
                    "input_transforms": {"x": _js("results.a2.value")},
                },
            },
            _raw("d", BASH, "results.c.value", language="bash"),
        ]
    }


async def _save(pg_pool: asyncpg.Pool, value: dict[str, Any], **extra: Any) -> None:
    async with pg_pool.acquire() as conn:
        if not await scripts.exists_path(conn, WORKSPACE, "u/admin/triple"):
            await scripts.create_script(
                conn,
                WORKSPACE,
                scripts.NewScript(path="u/admin/triple", content=TRIPLE, language="python3"),
                created_by="admin",
            )
        document = {"path": FLOW, "summary": "", "value": value, **extra}
        if await store.flow_exists(conn, WORKSPACE, FLOW):
            await store.update_flow(conn, WORKSPACE, FLOW, document, user="admin")
        else:
            await store.create_flow(conn, WORKSPACE, document, user="admin")


async def _run(queue: Queue, pg_pool: asyncpg.Pool, x: int) -> uuid.UUID:
    request = RunRequest(
        job_id=uuid.uuid4(),
        workspace=WORKSPACE,
        runnable=FlowPath(path=FLOW),
        requested_by="admin",
        trigger=Trigger(kind=TriggerKind.API),
        args={"x": x},
    )
    async with pg_pool.acquire() as conn, conn.transaction():
        await queue.enqueue([await resolve(conn, request)], conn=conn)
    return request.job_id


async def _flow_done(pg_pool: asyncpg.Pool, ids: list[uuid.UUID], timeout_s: float = 120) -> None:
    async with asyncio.timeout(timeout_s):
        while True:
            done = await pg_pool.fetchval(
                "SELECT count(*) FROM jobs_completed WHERE id = ANY($1::uuid[])", ids
            )
            if done == len(ids):
                return
            await asyncio.sleep(0.05)


async def _steps(pg_pool: asyncpg.Pool, flow_id: uuid.UUID) -> dict[str, list[asyncpg.Record]]:
    """The step jobs of a flow run (loops and branches included), by step id."""
    rows = await pg_pool.fetch(
        """
        SELECT j.flow_step, j.tag, c.status, c.result, c.error, c.worker
        FROM jobs j JOIN jobs_completed c USING (id)
        WHERE j.root_job = $1 AND j.kind NOT IN ('flow', 'flowpreview')
        ORDER BY c.completed_at
        """,
        flow_id,
    )
    steps: dict[str, list[asyncpg.Record]] = {}
    for row in rows:
        steps.setdefault(row["flow_step"], []).append(row)
    return steps


async def _until(condition: Callable[[], bool], timeout_s: float = 60) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.05)


@asynccontextmanager
async def _workers(
    pg_pool: asyncpg.Pool,
    database_url: str,
    data_dir: DataDir,
    executor: ExecutorSettings,
    *,
    concurrency: int = 1,
    watch_interval_s: float = 60.0,
) -> AsyncIterator[tuple[Worker, Queue]]:
    """A worker dedicated to the flow and an ordinary one (Python, bash and flow jobs:
    it starts the flows), both running until the block ends."""
    queue = Queue(pg_pool, on_child_finished=on_child_finished)
    dedicated = WorkerSettings(
        tags=(TAG,),
        concurrency=concurrency,
        jobs_dir=data_dir.jobs,
        heartbeat_interval_s=0.5,
        executor=executor,
        dedicated=DedicatedSettings(flows=(TAG,), watch_interval_s=watch_interval_s),
    )
    ordinary = WorkerSettings(
        tags=("python3", "bash", "flow"),
        jobs_dir=data_dir.root / "ordinary-jobs",
        heartbeat_interval_s=0.5,
        executor=executor,
    )
    stop = asyncio.Event()
    async with (
        Wakeup(database_url, dedicated.tags, mode="poll", poll_interval_s=0.02) as warm_wakeup,
        Wakeup(database_url, ordinary.tags, mode="poll", poll_interval_s=0.02) as cold_wakeup,
    ):
        warm = Worker(pg_pool, queue, warm_wakeup, dedicated)
        cold = Worker(pg_pool, queue, cold_wakeup, ordinary)
        running = [
            asyncio.create_task(warm.run(stop)),
            asyncio.create_task(cold.run(stop)),
        ]
        try:
            yield warm, queue
        finally:
            stop.set()
            await asyncio.gather(*running)


async def test_every_step_of_a_dedicated_flow_runs_on_its_worker_warm(
    pg_pool: asyncpg.Pool, database_url: str, data_dir: DataDir, settings: ExecutorSettings
) -> None:
    await _save(pg_pool, _pipeline(), dedicated_worker=True)
    async with _workers(pg_pool, database_url, data_dir, settings) as (warm, queue):
        pool = warm.dedicated
        assert pool is not None
        # Pre-warmed before any run: one interpreter per Python step code (a and a2
        # share one, so do inner and chosen; c is the saved script).
        await _until(lambda: len(pool.idle) == 3)
        assert pool.started == 3
        runs = [await _run(queue, pg_pool, x) for x in (1, 5)]
        for flow_id in runs:  # one after the other: each finds the interpreters idle
            await _flow_done(pg_pool, [flow_id])
        assert pool.started == 3  # no interpreter started for a job

    parents: dict[str, set[tuple[int, int]]] = {}
    for flow_id, x in zip(runs, (1, 5), strict=True):
        flow = await pg_pool.fetchrow(
            "SELECT j.tag, c.status, c.result, c.error FROM jobs j JOIN jobs_completed c "
            "USING (id) WHERE id = $1",
            flow_id,
        )
        assert flow["status"] == "success", flow["error"]
        assert flow["tag"] == "flow"  # the flow job itself is advanced as any other
        steps = await _steps(pg_pool, flow_id)
        assert set(steps) == {"a", "a2", "inner", "chosen", "c", "d"}
        for step_id, rows in steps.items():
            for row in rows:
                assert row["status"] == "success", (step_id, row["error"])
                assert row["tag"] == TAG  # only a worker dedicated to the flow claims it
                assert row["worker"] == warm.id  # never the ordinary one, which was idle
                if step_id != "d":
                    parents.setdefault(step_id, set()).add(tuple(row["result"]["parent"]))
        assert steps["a"][0]["result"]["value"] == x + 1
        assert steps["a2"][0]["result"]["value"] == x + 2
        assert sorted(r["result"]["value"] for r in steps["inner"]) == [10, 20, 30]
        assert steps["chosen"][0]["result"]["value"] == (x + 2) * 10
        assert steps["c"][0]["result"]["value"] == (x + 2) * 3
        assert steps["d"][0]["result"] == f"bash {(x + 2) * 3}"  # bash: cold, same worker
        assert flow["result"] == f"bash {(x + 2) * 3}"
    # The same warm interpreter for a step across runs and loop iterations, shared by
    # the steps with the same code; three in all.
    assert all(len(seen) == 1 for seen in parents.values()), parents
    assert parents["a"] == parents["a2"]
    assert parents["inner"] == parents["chosen"]
    assert len(set().union(*parents.values())) == 3


async def test_an_ordinary_worker_leaves_the_steps_to_the_dedicated_one(
    pg_pool: asyncpg.Pool, database_url: str, data_dir: DataDir, settings: ExecutorSettings
) -> None:
    """An ordinary worker (Python, bash and flow jobs) starts the flow but leaves its
    first step queued; the dedicated worker alone then runs the whole flow, its loop
    and branch included (they are advanced in its steps' completions)."""
    await _save(pg_pool, _pipeline(), dedicated_worker=True)
    queue = Queue(pg_pool, on_child_finished=on_child_finished)
    flow_id = await _run(queue, pg_pool, 1)
    ordinary = WorkerSettings(
        tags=("python3", "bash", "flow"), jobs_dir=data_dir.jobs, executor=settings
    )
    dedicated = WorkerSettings(
        tags=(TAG,),
        jobs_dir=data_dir.jobs,
        executor=settings,
        dedicated=DedicatedSettings(flows=(TAG,)),
    )
    for one in (ordinary, dedicated):
        async with Wakeup(database_url, one.tags, mode="poll", poll_interval_s=0.05) as wakeup:
            worker = Worker(pg_pool, queue, wakeup, one)
            await worker.run(asyncio.Event(), burst=True)
        if one is ordinary:
            waiting = await pg_pool.fetch(
                "SELECT j.flow_step, j.tag FROM jobs j JOIN job_queue q USING (id) "
                "WHERE j.parent_job = $1",
                flow_id,
            )
            assert [(row["flow_step"], row["tag"]) for row in waiting] == [("a", TAG)]
    await _flow_done(pg_pool, [flow_id], timeout_s=5)
    steps = await _steps(pg_pool, flow_id)
    assert {row["worker"] for rows in steps.values() for row in rows} == {worker.id}
    assert len(steps["inner"]) == 3


async def test_a_flow_saved_without_dedicated_worker_runs_its_steps_as_usual(
    pg_pool: asyncpg.Pool, database_url: str, data_dir: DataDir, settings: ExecutorSettings
) -> None:
    await _save(pg_pool, _pipeline())
    async with _workers(pg_pool, database_url, data_dir, settings) as (warm, queue):
        flow_id = await _run(queue, pg_pool, 1)
        await _flow_done(pg_pool, [flow_id])
    steps = await _steps(pg_pool, flow_id)
    assert {row["tag"] for rows in steps.values() for row in rows} == {"python3", "bash"}
    assert {row["worker"] for rows in steps.values() for row in rows} != {warm.id}
    assert warm.dedicated is not None
    assert warm.dedicated.started == 0  # nothing to warm: its steps are not this worker's


async def test_a_new_version_of_the_flow_is_warmed_and_the_old_retired(
    pg_pool: asyncpg.Pool, database_url: str, data_dir: DataDir, settings: ExecutorSettings
) -> None:
    await _save(pg_pool, _pipeline(), dedicated_worker=True)
    async with _workers(pg_pool, database_url, data_dir, settings, watch_interval_s=0.2) as (
        warm,
        queue,
    ):
        pool = warm.dedicated
        assert pool is not None
        await _until(lambda: len(pool.idle) == 3)
        before = {interpreter.key for interpreter in pool.idle}
        plus_two = PLUS_ONE.replace("x + 1", "x + 2")
        await _save(pg_pool, _pipeline(plus_two), dedicated_worker=True)
        # Seen by the watcher: step a's new code gets an interpreter, the old one goes.
        await _until(lambda: pool.retired["new_version"] == 1 and len(pool.idle) == 3)
        after = {interpreter.key for interpreter in pool.idle}
        assert len(before & after) == 2
        assert pool.started == 4
        flow_id = await _run(queue, pg_pool, 1)
        await _flow_done(pg_pool, [flow_id])
        assert pool.started == 4  # the run found the new version warm
    steps = await _steps(pg_pool, flow_id)
    assert steps["a"][0]["result"]["value"] == 3
    assert steps["a2"][0]["result"]["value"] == 5


async def test_a_run_of_a_new_version_makes_the_worker_read_the_flow_again(
    pg_pool: asyncpg.Pool, database_url: str, data_dir: DataDir, settings: ExecutorSettings
) -> None:
    """Its watcher would only look again in a minute: the first step it has no warm
    interpreter for makes it re-read the flow at once."""
    await _save(pg_pool, _pipeline(), dedicated_worker=True)
    async with _workers(pg_pool, database_url, data_dir, settings) as (warm, queue):
        pool = warm.dedicated
        assert pool is not None
        await _until(lambda: len(pool.idle) == 3)
        await _save(pg_pool, _pipeline(PLUS_ONE.replace("x + 1", "x * 4")), dedicated_worker=True)
        flow_id = await _run(queue, pg_pool, 2)
        await _flow_done(pg_pool, [flow_id])
        # Step a started an interpreter for its new code and had the flow read again:
        # the old code's interpreter is retired long before the next look.
        await _until(lambda: pool.retired["new_version"] == 1, timeout_s=20)
        assert pool.started == 4
        assert len(pool.idle) == 3
    steps = await _steps(pg_pool, flow_id)
    assert steps["a"][0]["result"]["value"] == 8
    assert steps["a2"][0]["result"]["value"] == 32


async def test_fifty_runs_of_a_dedicated_flow(
    pg_pool: asyncpg.Pool, database_url: str, data_dir: DataDir, settings: ExecutorSettings
) -> None:
    value = {
        "modules": [
            _raw("a", PLUS_ONE, "flow_input.x"),
            {
                "id": "loop",
                "value": {
                    "type": "forloopflow",
                    "iterator": _js("[results.a.value, results.a.value + 1]"),
                    "parallel": True,
                    "modules": [_raw("inner", TIMES_TEN, "flow_input.iter.value")],
                },
            },
            _raw("b", TRIPLE, "results.loop[0].value + results.loop[1].value"),
        ]
    }
    await _save(pg_pool, value, dedicated_worker=True)
    async with _workers(pg_pool, database_url, data_dir, settings, concurrency=2) as (
        warm,
        queue,
    ):
        pool = warm.dedicated
        assert pool is not None
        await _until(lambda: len(pool.idle) == 3)
        runs = {await _run(queue, pg_pool, x): x for x in range(50)}
        await _flow_done(pg_pool, list(runs), timeout_s=300)
    rows = await pg_pool.fetch(
        "SELECT id, status, result, error FROM jobs_completed WHERE id = ANY($1::uuid[])",
        list(runs),
    )
    assert len(rows) == 50
    for row in rows:
        x = runs[row["id"]]
        assert row["status"] == "success", row["error"]
        # a: x + 1; loop: 10 (x + 1), 10 (x + 2); b: 3 times their sum
        assert row["result"]["value"] == 3 * (10 * (x + 1) + 10 * (x + 2))
    # Two job loops: at most two interpreters per step code ever ran.
    assert pool.started <= 6
    assert pool.retired["crash"] == 0


def test_gristmill_dedicated_names_flows_as_their_tags() -> None:
    settings = load_settings(
        {"GRISTMILL_DEDICATED": f"main:f/hot/echo,{TAG},main:/flow/{FLOW}/,main:f/hot/echo"}
    )
    dedicated = dedicated_settings(settings)
    assert dedicated is not None
    assert dedicated.scripts == ("main:f/hot/echo",)
    assert dedicated.flows == (TAG,)
    assert worker_settings(settings, dedicated=dedicated).tags == ("main:f/hot/echo", TAG)


@pytest.mark.parametrize("value", ["main:flow/", "main:flow/not a path", "main:flow/x"])
def test_a_bad_dedicated_flow_names_the_setting(value: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        dedicated_settings(load_settings({"GRISTMILL_DEDICATED": value}))
    assert raised.value.location == "GRISTMILL_DEDICATED"
    assert value in raised.value.message


async def test_dedicated_worker_is_kept_on_the_flow_and_checked(pg_pool: asyncpg.Pool) -> None:
    await _save(pg_pool, _pipeline(), dedicated_worker=True, tag_note="kept too")
    saved = await store.get_flow(pg_pool, WORKSPACE, FLOW)
    document = saved.document()
    assert document["dedicated_worker"] is True  # beside summary, as Windmill has it
    assert document["tag_note"] == "kept too"
    assert "dedicated_worker" not in document["value"]
    assert saved.dedicated_tag == TAG
    with pytest.raises(InvalidRequest) as raised:
        await _save(pg_pool, _pipeline(), dedicated_worker="yes")
    assert raised.value.location == "dedicated_worker"
    await _save(pg_pool, _pipeline(), dedicated_worker=False)
    assert (await store.get_flow(pg_pool, WORKSPACE, FLOW)).dedicated_tag is None


async def test_the_worker_command_says_when_its_flow_is_missing_or_not_dedicated(
    pg_pool: asyncpg.Pool,
    database_url: str,
    tmp_path: Path,
    spawn: Callable[..., GristmillProcess],
) -> None:
    await _save(pg_pool, _pipeline())  # saved without dedicated_worker
    env = {
        "GRISTMILL_DATABASE_URL": database_url,
        "GRISTMILL_DATA_DIR": str(tmp_path / "worker-data"),
        "GRISTMILL_WORKERS": "1",
        "GRISTMILL_WAKE_MODE": "poll",
    }
    args = ["worker", "--dedicated", "main:flow/f/hot/missing", "--dedicated", TAG, "--burst"]
    worker = spawn(args, env)
    code = await asyncio.to_thread(worker.proc.wait, 120)
    output = worker.output()
    assert code == 0, output
    assert "GRISTMILL_DEDICATED names the flow 'f/hot/missing'" in output
    assert "which does not exist" in output
    assert f"GRISTMILL_DEDICATED names the flow '{FLOW}'" in output
    assert "not saved with dedicated_worker" in output
