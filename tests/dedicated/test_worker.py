"""Dedicated workers end to end: real Postgres queue, real worker loop, real sandbox."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import msgspec

from gristmill.common import scripts
from gristmill.common.contracts.runs import (
    FlowPreview,
    RetryPolicy,
    RunRequest,
    ScriptPath,
    Trigger,
    TriggerKind,
)
from gristmill.common.flows.engine import on_child_finished
from gristmill.common.queue import ClaimedJob, NewJob, Queue
from gristmill.common.runs import resolve
from gristmill.common.tokens import ensure_bootstrap, lookup_token
from gristmill.common.wakeup import Wakeup
from gristmill.worker.dedicated import DedicatedSettings
from gristmill.worker.execution import ExecutorSettings
from gristmill.worker.job_context import JobContext
from gristmill.worker.service import Worker, WorkerSettings
from tests.dedicated.conftest import DataDir
from tests.harness.services import GristmillProcess

WORKSPACE = "main"
PATH = "u/admin/counter"
TAG = f"{WORKSPACE}:{PATH}"
#: Returns its argument, what it saw in a module-level list (fresh per job), its token,
#: and its parent process (the warm interpreter): pid and start time.
COUNTER = """
import os

SEEN = []

def main(n: int):
    SEEN.append(n)
    with open(f"/proc/{os.getppid()}/stat", "rb") as f:
        raw = f.read()
    started = int(raw[raw.rfind(b")") + 2 :].split()[19])
    return {"n": n, "seen": SEEN, "token": os.environ.get("WM_TOKEN"), "parent": started}
"""


async def _save(pg_pool: asyncpg.Pool, path: str, code: str, **extra: Any) -> None:
    async with pg_pool.acquire() as conn:
        await scripts.create_script(
            conn,
            WORKSPACE,
            scripts.NewScript(path=path, content=code, language="python3", extra=extra),
            created_by="admin",
        )


async def resolved_job(pg_pool: asyncpg.Pool, path: str, args: dict[str, Any]) -> NewJob:
    request = RunRequest(
        job_id=uuid.uuid4(),
        workspace=WORKSPACE,
        runnable=ScriptPath(path=path),
        requested_by="admin",
        trigger=Trigger(kind=TriggerKind.API),
        args=args,
    )
    async with pg_pool.acquire() as conn:
        return await resolve(conn, request)


def _settings(
    data_dir: DataDir, executor: ExecutorSettings, *, dedicated: bool = True
) -> WorkerSettings:
    """A worker dedicated to ``TAG``, or an ordinary Python worker."""
    return WorkerSettings(
        tags=(TAG,) if dedicated else ("python3",),
        jobs_dir=data_dir.jobs,
        heartbeat_interval_s=0.5,
        executor=executor,
        dedicated=DedicatedSettings(scripts=(TAG,)) if dedicated else None,
    )


async def drain(
    pg_pool: asyncpg.Pool,
    database_url: str,
    settings: WorkerSettings,
    job_env: Any = None,
) -> Worker:
    """Run a worker in burst mode until nothing is left that it may claim."""
    queue = Queue(pg_pool)
    async with Wakeup(database_url, settings.tags, mode="poll", poll_interval_s=0.05) as wakeup:
        worker = Worker(pg_pool, queue, wakeup, settings, job_env=job_env)
        await worker.run(asyncio.Event(), burst=True)
    return worker


async def completed(pg_pool: asyncpg.Pool, ids: list[uuid.UUID]) -> dict[uuid.UUID, Any]:
    rows = await pg_pool.fetch(
        "SELECT id, status, result, error FROM jobs_completed WHERE id = ANY($1::uuid[])", ids
    )
    return {row["id"]: row for row in rows}


async def test_a_script_saved_dedicated_is_claimed_only_by_its_dedicated_worker(
    pg_pool: asyncpg.Pool, database_url: str, data_dir: DataDir, settings: ExecutorSettings
) -> None:
    await ensure_bootstrap(pg_pool, admin_token="dedicated-tests-admin-token-0123456789")
    await _save(pg_pool, PATH, COUNTER, dedicated_worker=True)
    await _save(pg_pool, "u/admin/ordinary", "def main():\n    return 'ordinary'\n")
    dedicated = await resolved_job(pg_pool, PATH, {"n": 7})
    ordinary = await resolved_job(pg_pool, "u/admin/ordinary", {})
    assert dedicated.tag == TAG
    assert ordinary.tag == "python3"
    await Queue(pg_pool).enqueue([dedicated, ordinary])

    await drain(pg_pool, database_url, _settings(data_dir, settings, dedicated=False))
    done = await completed(pg_pool, [dedicated.id, ordinary.id])
    assert set(done) == {ordinary.id}  # the ordinary worker left the dedicated job alone

    worker = await drain(pg_pool, database_url, _settings(data_dir, settings))
    done = await completed(pg_pool, [dedicated.id])
    assert done[dedicated.id]["status"] == "success"
    assert done[dedicated.id]["result"]["n"] == 7
    assert worker.dedicated is not None
    assert worker.dedicated.started == 1


async def test_a_thousand_jobs_on_one_warm_interpreter(
    pg_pool: asyncpg.Pool, database_url: str, data_dir: DataDir, settings: ExecutorSettings
) -> None:
    await ensure_bootstrap(pg_pool, admin_token="dedicated-tests-admin-token-0123456789")
    await _save(pg_pool, PATH, COUNTER, dedicated_worker=True)
    template = await resolved_job(pg_pool, PATH, {"n": 0})
    jobs = [msgspec.structs.replace(template, id=uuid.uuid4(), args={"n": n}) for n in range(1000)]
    queue = Queue(pg_pool)
    for start in range(0, len(jobs), 250):
        await queue.enqueue(jobs[start : start + 250])

    tokens: dict[uuid.UUID, str] = {}
    context = JobContext(pg_pool, default_timeout_s=60)

    async def job_env(job: ClaimedJob) -> dict[str, str]:
        env = await context(job)
        tokens[job.id] = env["WM_TOKEN"]
        return env

    worker = await drain(pg_pool, database_url, _settings(data_dir, settings), job_env)

    done = await completed(pg_pool, [job.id for job in jobs])
    assert len(done) == 1000
    parents = set()
    for job in jobs:
        row = done[job.id]
        assert row["status"] == "success", row["error"]
        n = job.args["n"]
        assert row["result"]["n"] == n
        assert row["result"]["seen"] == [n]  # no global of another job
        assert row["result"]["token"] == tokens[job.id]  # its own job-scoped token
        parents.add(row["result"]["parent"])
    assert len(set(tokens.values())) == 1000
    assert len(parents) == 1  # one warm interpreter was the parent of all 1,000
    assert worker.dedicated is not None
    assert worker.dedicated.started == 1
    # The tokens died with their jobs.
    assert await lookup_token(pg_pool, tokens[jobs[0].id]) is None
    assert await lookup_token(pg_pool, tokens[jobs[-1].id]) is None


async def test_a_crash_mid_job_is_retried_per_policy_on_a_new_interpreter(
    pg_pool: asyncpg.Pool, database_url: str, data_dir: DataDir, settings: ExecutorSettings
) -> None:
    await ensure_bootstrap(pg_pool, admin_token="dedicated-tests-admin-token-0123456789")
    code = COUNTER.replace(
        "    SEEN.append(n)\n",
        "    SEEN.append(n)\n    if os.environ['ATTEMPT'] == '1' and n == 1:\n"
        "        print('crashing', flush=True)\n        os._exit(9)\n"
        "    if n == 2:\n        import ctypes\n        ctypes.string_at(0)\n",
    )
    await _save(pg_pool, PATH, code, dedicated_worker=True)
    retried = msgspec.structs.replace(
        await resolved_job(pg_pool, PATH, {"n": 1}), retry=RetryPolicy(max_attempts=2, delay_s=0)
    )
    segfault = await resolved_job(pg_pool, PATH, {"n": 2})
    before = await resolved_job(pg_pool, PATH, {"n": 0})
    after = await resolved_job(pg_pool, PATH, {"n": 3})
    queue = Queue(pg_pool)
    for job in (before, retried, segfault, after):  # one at a time, in this order
        await queue.enqueue([job])

    async def job_env(job: ClaimedJob) -> dict[str, str]:
        return {"ATTEMPT": str(job.attempt)}

    worker = await drain(pg_pool, database_url, _settings(data_dir, settings), job_env)
    done = await completed(pg_pool, [before.id, retried.id, segfault.id, after.id])
    assert done[before.id]["status"] == "success"
    assert done[retried.id]["status"] == "success"  # its second attempt
    assert done[retried.id]["result"]["n"] == 1
    logs = "".join(text for _, text in await queue.read_logs(retried.id))
    assert "crashing" in logs
    assert done[segfault.id]["status"] == "failure"
    assert done[segfault.id]["error"]["exit_reason"] == "signal"
    assert done[segfault.id]["error"]["signal"] == 11
    assert done[after.id]["status"] == "success"
    assert worker.dedicated is not None
    assert worker.dedicated.retired["crash"] == 2
    assert worker.dedicated.started == 3
    # The interpreter that ran the last job is not the one of the first.
    assert done[after.id]["result"]["parent"] != done[before.id]["result"]["parent"]


async def test_flow_steps_of_a_dedicated_script_run_on_its_dedicated_worker(
    pg_pool: asyncpg.Pool, database_url: str, data_dir: DataDir, settings: ExecutorSettings
) -> None:
    await ensure_bootstrap(pg_pool, admin_token="dedicated-tests-admin-token-0123456789")
    await _save(pg_pool, PATH, COUNTER, dedicated_worker=True)
    step = {"type": "script", "path": PATH}
    value = {
        "modules": [
            {
                "id": "a",
                "value": {**step, "input_transforms": {"n": {"type": "static", "value": 1}}},
            },
            {
                "id": "b",
                "value": {
                    **step,
                    "input_transforms": {"n": {"type": "javascript", "expr": "results.a.n + 1"}},
                },
            },
        ]
    }
    request = RunRequest(
        job_id=uuid.uuid4(),
        workspace=WORKSPACE,
        runnable=FlowPreview(value=value),
        requested_by="admin",
        trigger=Trigger(kind=TriggerKind.API),
    )
    queue = Queue(pg_pool, on_child_finished=on_child_finished)
    async with pg_pool.acquire() as conn, conn.transaction():
        await queue.enqueue([await resolve(conn, request)], conn=conn)

    flows = msgspec.structs.replace(_settings(data_dir, settings, dedicated=False), tags=("flow",))
    dedicated = _settings(data_dir, settings)
    stop = asyncio.Event()
    async with (
        Wakeup(database_url, flows.tags, mode="poll", poll_interval_s=0.05) as flow_wakeup,
        Wakeup(database_url, dedicated.tags, mode="poll", poll_interval_s=0.05) as warm_wakeup,
    ):
        warm = Worker(pg_pool, queue, warm_wakeup, dedicated)
        running = [
            asyncio.create_task(Worker(pg_pool, queue, flow_wakeup, flows).run(stop)),
            asyncio.create_task(warm.run(stop)),
        ]
        try:
            async with asyncio.timeout(60):
                while not (await completed(pg_pool, [request.job_id])):
                    await asyncio.sleep(0.05)
        finally:
            stop.set()
            await asyncio.gather(*running)
    flow = (await completed(pg_pool, [request.job_id]))[request.job_id]
    assert flow["status"] == "success", flow["error"]
    assert flow["result"]["n"] == 2
    steps = await pg_pool.fetch(
        "SELECT tag FROM jobs WHERE parent_job = $1 ORDER BY created_at", request.job_id
    )
    assert [row["tag"] for row in steps] == [TAG, TAG]
    assert warm.dedicated is not None
    assert warm.dedicated.started == 1  # both steps on one warm interpreter


async def test_the_worker_command_dedicated_to_a_script(
    pg_pool: asyncpg.Pool,
    database_url: str,
    tmp_path: Path,
    spawn: Callable[..., GristmillProcess],
) -> None:
    """``gristmill worker --dedicated main:<path> --burst``: runs the script's queued
    jobs warm, leaves other jobs alone."""
    await ensure_bootstrap(pg_pool, admin_token="dedicated-tests-admin-token-0123456789")
    await _save(pg_pool, PATH, COUNTER, dedicated_worker=True)
    await _save(pg_pool, "u/admin/ordinary", "def main():\n    return 'ordinary'\n")
    jobs = [await resolved_job(pg_pool, PATH, {"n": n}) for n in range(3)]
    ordinary = await resolved_job(pg_pool, "u/admin/ordinary", {})
    await Queue(pg_pool).enqueue([*jobs, ordinary])
    env = {
        "GRISTMILL_DATABASE_URL": database_url,
        "GRISTMILL_DATA_DIR": str(tmp_path / "worker-data"),
        "GRISTMILL_WORKERS": "1",
        "GRISTMILL_WAKE_MODE": "poll",
    }
    worker = spawn(["worker", "--dedicated", TAG, "--burst"], env)
    code = await asyncio.to_thread(worker.proc.wait, 120)
    output = worker.output()
    assert code == 0, output
    assert "dedicated worker" in output
    assert TAG in output
    done = await completed(pg_pool, [job.id for job in jobs] + [ordinary.id])
    assert set(done) == {job.id for job in jobs}  # not the ordinary job
    assert {done[job.id]["result"]["n"] for job in jobs} == {0, 1, 2}
    assert len({done[job.id]["result"]["parent"] for job in jobs}) == 1  # one warm process
