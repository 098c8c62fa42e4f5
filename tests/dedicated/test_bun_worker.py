"""Warm Bun jobs end to end: real Postgres queue, real worker loop, real sandbox, real Bun.

A ``bun`` script saved with ``dedicated_worker`` gets the tag ``main:<path>``; a worker
dedicated to it runs its jobs in one warm interpreter, each with its own arguments,
token and module state; crashes are retried per the job's policy on a new
interpreter; timeouts and cancel stop the job with its interpreter.
"""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import msgspec

from gristmill.common import scripts
from gristmill.common.contracts.runs import (
    RetryPolicy,
)
from gristmill.common.queue import ClaimedJob, Queue
from gristmill.common.tokens import ensure_bootstrap, lookup_token
from gristmill.common.wakeup import Wakeup
from gristmill.worker.dedicated import DedicatedSettings
from gristmill.worker.execution import ExecutorSettings
from gristmill.worker.job_context import JobContext
from gristmill.worker.service import Worker, WorkerSettings
from tests.dedicated.conftest import DataDir
from tests.dedicated.test_worker import completed, drain, resolved_job

WORKSPACE = "main"
PATH = "u/admin/bun_counter"
TAG = f"{WORKSPACE}:{PATH}"
ADMIN_TOKEN = "dedicated-tests-admin-token-0123456789"
#: Returns its argument, what it saw in a module-level list (fresh per job), a global
#: left by the previous job (none), its token, and its process (pid, start time).
COUNTER = """
import { readFileSync } from "node:fs";

const SEEN: number[] = [];

export async function main(n: number) {
  SEEN.push(n);
  const left = (globalThis as any).leftBehind ?? null;
  (globalThis as any).leftBehind = n;
  console.log(`job ${n}`);
  const raw = readFileSync("/proc/self/stat", "latin1");
  const started = Number(raw.slice(raw.lastIndexOf(")") + 2).split(" ")[19]);
  return { n, seen: SEEN, left, token: process.env.WM_TOKEN ?? null, process: started };
}
"""


async def _save(pg_pool: asyncpg.Pool, code: str) -> None:
    async with pg_pool.acquire() as conn:
        await scripts.create_script(
            conn,
            WORKSPACE,
            scripts.NewScript(
                path=PATH, content=code, language="bun", extra={"dedicated_worker": True}
            ),
            created_by="admin",
        )


def _settings(data_dir: DataDir, executor: ExecutorSettings) -> WorkerSettings:
    return WorkerSettings(
        tags=(TAG,),
        jobs_dir=data_dir.jobs,
        heartbeat_interval_s=0.2,
        executor=executor,
        dedicated=DedicatedSettings(scripts=(TAG,)),
    )


async def test_two_hundred_bun_jobs_on_one_warm_interpreter(
    pg_pool: asyncpg.Pool, database_url: str, data_dir: DataDir, settings: ExecutorSettings
) -> None:
    await ensure_bootstrap(pg_pool, admin_token=ADMIN_TOKEN)
    await _save(pg_pool, COUNTER)
    template = await resolved_job(pg_pool, PATH, {"n": 0})
    assert template.tag == TAG
    jobs = [msgspec.structs.replace(template, id=uuid.uuid4(), args={"n": n}) for n in range(200)]
    queue = Queue(pg_pool)
    await queue.enqueue(jobs)

    tokens: dict[uuid.UUID, str] = {}
    context = JobContext(pg_pool, default_timeout_s=60)

    async def job_env(job: ClaimedJob) -> dict[str, str]:
        env = await context(job)
        tokens[job.id] = env["WM_TOKEN"]
        return env

    worker = await drain(pg_pool, database_url, _settings(data_dir, settings), job_env)

    done = await completed(pg_pool, [job.id for job in jobs])
    assert len(done) == 200
    processes = set()
    for job in jobs:
        row = done[job.id]
        assert row["status"] == "success", row["error"]
        n = job.args["n"]
        assert row["result"]["n"] == n
        assert row["result"]["seen"] == [n]  # no module state of another job
        assert row["result"]["left"] is None  # no global of another job
        assert row["result"]["token"] == tokens[job.id]  # its own job-scoped token
        processes.add(row["result"]["process"])
    assert len(set(tokens.values())) == 200
    assert len(processes) == 1  # one warm process ran all 200
    assert worker.dedicated is not None
    assert worker.dedicated.started == 1
    logs = "".join(text for _, text in await queue.read_logs(jobs[7].id))
    assert logs == "job 7\n"
    assert await lookup_token(pg_pool, tokens[jobs[-1].id]) is None  # died with its job


async def test_a_crash_is_retried_per_policy_on_a_new_interpreter(
    pg_pool: asyncpg.Pool, database_url: str, data_dir: DataDir, settings: ExecutorSettings
) -> None:
    await ensure_bootstrap(pg_pool, admin_token=ADMIN_TOKEN)
    code = COUNTER.replace(
        "  SEEN.push(n);\n",
        "  SEEN.push(n);\n"
        '  if (process.env.ATTEMPT === "1" && n === 1) {\n'
        '    console.log("exiting");\n'
        "    process.exit(9);\n"
        "  }\n"
        '  if (n === 2) throw new RangeError("two is out of range");\n',
    )
    await _save(pg_pool, code)
    retried = msgspec.structs.replace(
        await resolved_job(pg_pool, PATH, {"n": 1}), retry=RetryPolicy(max_attempts=2, delay_s=0)
    )
    thrown = await resolved_job(pg_pool, PATH, {"n": 2})
    before = await resolved_job(pg_pool, PATH, {"n": 0})
    after = await resolved_job(pg_pool, PATH, {"n": 3})
    queue = Queue(pg_pool)
    for job in (before, retried, thrown, after):  # one at a time, in this order
        await queue.enqueue([job])

    async def job_env(job: ClaimedJob) -> dict[str, str]:
        return {"ATTEMPT": str(job.attempt)}

    worker = await drain(pg_pool, database_url, _settings(data_dir, settings), job_env)
    done = await completed(pg_pool, [before.id, retried.id, thrown.id, after.id])
    assert done[before.id]["status"] == "success"
    assert done[retried.id]["status"] == "success"  # its second attempt
    assert done[retried.id]["result"]["n"] == 1
    logs = "".join(text for _, text in await queue.read_logs(retried.id))
    assert "exiting" in logs
    assert done[thrown.id]["status"] == "failure"
    error = done[thrown.id]["error"]
    assert (error["name"], error["message"]) == ("RangeError", "two is out of range")
    assert error["location"].startswith("line 12, column ")
    assert done[after.id]["status"] == "success"
    assert worker.dedicated is not None
    assert worker.dedicated.retired["crash"] == 1  # the exit; the thrown error is the job's
    assert worker.dedicated.started == 2
    first, last = done[before.id]["result"], done[after.id]["result"]
    assert last["process"] != first["process"]


async def test_timeout_and_cancel_of_warm_bun_jobs(
    pg_pool: asyncpg.Pool, database_url: str, data_dir: DataDir, settings: ExecutorSettings
) -> None:
    await ensure_bootstrap(pg_pool, admin_token=ADMIN_TOKEN)
    code = COUNTER.replace(
        "  SEEN.push(n);\n",
        "  SEEN.push(n);\n"
        "  if (n < 0) {\n"
        '    console.log("sleeping");\n'
        "    await Bun.sleep(60_000);\n"
        "  }\n",
    )
    await _save(pg_pool, code)
    slow = msgspec.structs.replace(await resolved_job(pg_pool, PATH, {"n": -1}), timeout_s=1)
    canceled = await resolved_job(pg_pool, PATH, {"n": -2})
    fine = await resolved_job(pg_pool, PATH, {"n": 5})
    queue = Queue(pg_pool)
    stop = asyncio.Event()
    worker_settings = _settings(data_dir, settings)
    async with Wakeup(
        database_url, worker_settings.tags, mode="poll", poll_interval_s=0.05
    ) as wakeup:
        worker = Worker(pg_pool, queue, wakeup, worker_settings)
        running = asyncio.create_task(worker.run(stop))
        try:
            await queue.enqueue([slow])
            await _wait_for(pg_pool, slow.id)
            await queue.enqueue([canceled])
            async with asyncio.timeout(30):  # until it runs (its first log line)
                while not await queue.read_logs(canceled.id):
                    await asyncio.sleep(0.05)
            await queue.cancel(canceled.id, by="admin", reason="enough")
            await _wait_for(pg_pool, canceled.id)
            await queue.enqueue([fine])
            await _wait_for(pg_pool, fine.id)
        finally:
            stop.set()
            await running
    done = await completed(pg_pool, [slow.id, canceled.id, fine.id])
    assert done[slow.id]["status"] == "failure"
    assert done[slow.id]["error"]["name"] == "Timeout"
    assert done[slow.id]["error"]["exit_reason"] == "timeout"
    assert "".join(text for _, text in await queue.read_logs(slow.id)) == "sleeping\n"
    assert done[canceled.id]["status"] == "canceled"
    assert done[fine.id]["status"] == "success", done[fine.id]["error"]
    assert done[fine.id]["result"]["seen"] == [5]
    assert worker.dedicated is not None
    assert worker.dedicated.retired["killed"] == 2
    assert worker.dedicated.started == 3


async def _wait_for(pg_pool: asyncpg.Pool, job_id: uuid.UUID) -> None:
    async with asyncio.timeout(60):
        while not await completed(pg_pool, [job_id]):
            await asyncio.sleep(0.05)
