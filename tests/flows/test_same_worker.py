"""``same_worker`` flows: every step on one worker, sharing ``./shared``; a lost
worker's flows go on elsewhere (its folder lost) instead of hanging."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest

from gristmill.common.flows.engine import on_child_finished
from gristmill.common.flows.same_worker import release_lost_workers
from gristmill.common.queue import NewJob, Queue, worker_tag
from gristmill.common.wakeup import Wakeup
from gristmill.dispatcher.service import Dispatcher, MaintenanceSettings
from gristmill.worker.execution import ExecutorSettings
from gristmill.worker.sandbox import Limits, Sandbox, SandboxPolicy, detect
from gristmill.worker.service import Worker, WorkerSettings
from tests.flows.harness import Completed, FlowRunner, py, sh
from tests.harness.services import GristmillProcess, wait_until

WRITE = (
    "def main(word):\n"
    "    with open('shared/x.txt', 'w') as f:\n"
    "        f.write(word)\n"
    "    return 'written'\n"
)
READ = "def main():\n    return open('./shared/x.txt').read().upper()\n"
LISTING = "import os\ndef main():\n    return sorted(os.listdir('shared'))\n"
#: Sleeps, so that two idle workers would both take some of a loop's iterations.
TOUCH = (
    "import time\n"
    "def main(i):\n"
    "    time.sleep(0.4)\n"
    "    open(f'shared/item-{i}', 'w').write(open('shared/x.txt').read())\n"
    "    return i\n"
)
SLOW = "import time\ndef main(i):\n    time.sleep(0.4)\n    return i\n"


def _loop(id_: str, items: int, body: list[dict[str, Any]], *, parallel: bool) -> dict[str, Any]:
    value: dict[str, Any] = {
        "type": "forloopflow",
        "iterator": {"type": "javascript", "expr": f"[...Array({items}).keys()]"},
        "skip_failures": False,
        "modules": body,
    }
    if parallel:
        value |= {"parallel": True, "parallelism": {"type": "static", "value": items}}
    return {"id": id_, "value": value}


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    """The real bubblewrap sandbox, each job as its own host uid where the tests run
    as root (steps of one flow then differ in uid unless they share one)."""
    return detect(SandboxPolicy(limits=Limits(memory_mb=512, tmp_mb=16)))


class _Workers:
    """In-process workers (sandboxed), each with its own id, over one pool."""

    def __init__(self, runner: FlowRunner, sandbox: Sandbox) -> None:
        self.runner = runner
        self.settings = WorkerSettings(
            tags=("python3", "bash", "flow"),
            jobs_dir=runner.settings.jobs_dir,
            heartbeat_interval_s=0.2,
            executor=ExecutorSettings(sandbox=sandbox, kill_grace_s=0.5),
        )
        self.ids: list[str] = []

    @contextlib.asynccontextmanager
    async def running(
        self, count: int, *, loops: int = 1
    ) -> AsyncIterator[list[asyncio.Task[None]]]:
        stop = asyncio.Event()
        settings = msgspec.structs.replace(self.settings, concurrency=loops)
        async with Wakeup(self.runner.database_url, self.settings.tags) as wakeup:
            workers = [
                Worker(self.runner.pool, self.runner.queue, wakeup, settings) for _ in range(count)
            ]
            self.ids = [worker.id for worker in workers]
            tasks = [asyncio.create_task(worker.run(stop)) for worker in workers]
            try:
                yield tasks
            finally:
                stop.set()
                await asyncio.gather(*tasks)


@pytest.fixture
def workers(runner: FlowRunner, sandbox: Sandbox) -> _Workers:
    return _Workers(runner, sandbox)


async def _steps(pool: asyncpg.Pool, root: uuid.UUID) -> list[asyncpg.Record]:
    """Every step job of the flow ``root`` (script jobs), with where and how it ended."""
    return await pool.fetch(
        "SELECT j.id, j.flow_step, j.tag, c.status, c.worker, c.attempt, c.error "
        "FROM jobs j LEFT JOIN jobs_completed c ON c.id = j.id "
        "WHERE j.root_job = $1 AND j.kind = 'flowscript' ORDER BY j.created_at, j.id",
        root,
    )


async def test_every_step_runs_on_one_worker_and_shares_the_folder(
    runner: FlowRunner, workers: _Workers, pg_pool: asyncpg.Pool
) -> None:
    shared = {
        "same_worker": True,
        "modules": [
            py("s1", WRITE, word="flow_input.word"),
            sh("s2", 'echo "two:$(cat ./shared/x.txt)" > shared/two.txt\necho done'),
            py("s3", READ),
            _loop("s4", 4, [py("touch", TOUCH, i="flow_input.iter.value")], parallel=True),
            py("s5", LISTING),
        ],
    }
    spread = {
        "modules": [_loop("l", 4, [py("slow", SLOW, i="flow_input.iter.value")], parallel=True)]
    }
    async with workers.running(2) as tasks:
        pinned_id = await runner.submit(shared, {"word": "hello"})
        pinned = await runner.wait(pinned_id, tasks=tasks, timeout=120)
        free_id = await runner.submit(spread)
        free = await runner.wait(free_id, tasks=tasks, timeout=120)
        folder = workers.settings.jobs_dir / "flow-shared" / str(pinned_id)

        async def removed() -> bool:
            return not folder.exists()

        await wait_until(removed, timeout=10, what="the flow's folder to be removed")
    assert pinned.status == "success", pinned
    assert pinned.result == ["item-0", "item-1", "item-2", "item-3", "two.txt", "x.txt"]
    steps = await _steps(pg_pool, pinned_id)
    assert [s["flow_step"] for s in steps][:3] == ["s1", "s2", "s3"]
    assert len(steps) == 8  # s1, s2, s3, four iterations' steps, s5: each once
    assert {s["status"] for s in steps} == {"success"}
    used = {s["worker"] for s in steps}
    assert len(used) == 1, used
    assert used <= set(workers.ids)
    assert (
        await pg_pool.fetchval("SELECT worker FROM flow_status WHERE id = $1", pinned_id)
        == used.pop()
    )
    by_step = {s["flow_step"]: s["id"] for s in steps}
    s3 = await pg_pool.fetchval("SELECT result FROM jobs_completed WHERE id = $1", by_step["s3"])
    assert s3 == "HELLO"
    # Definitions keep their own tags (the pin is the queue's claim tag only).
    assert {s["tag"] for s in steps} == {"python3", "bash"}
    # The same loop without same_worker: its steps went to both idle workers.
    assert free.status == "success", free
    assert free.result == [0, 1, 2, 3]
    assert len({s["worker"] for s in await _steps(pg_pool, free_id)}) == 2


@pytest.mark.parametrize("sandboxed", [True, False], ids=["sandboxed", "insecure"])
async def test_a_loop_inside_shares_the_folder(
    runner: FlowRunner, workers: _Workers, pg_pool: asyncpg.Pool, sandboxed: bool
) -> None:
    """Also without a sandbox (``./shared`` is then a link to the flow's folder)."""
    append = (
        "def main(i):\n"
        "    seed = open('shared/x.txt').read()\n"
        "    with open('shared/log.txt', 'a') as f:\n"
        "        f.write(f'{seed}-{i}\\n')\n"
        "    return i\n"
    )
    value = {
        "same_worker": True,
        "modules": [
            py("seed", WRITE, word="flow_input.word"),
            _loop("loop", 3, [py("append", append, i="flow_input.iter.value")], parallel=False),
            py("read", "def main():\n    return open('shared/log.txt').read().split()\n"),
        ],
    }
    job_id = await runner.submit(value, {"word": "w"})
    if sandboxed:
        async with workers.running(2) as tasks:
            done = await runner.wait(job_id, tasks=tasks, timeout=120)
    else:
        done = await runner.drain(job_id, workers=2, timeout=120)
    assert done.status == "success", done
    assert done.result == ["w-0", "w-1", "w-2"]
    steps = await _steps(pg_pool, job_id)
    assert len(steps) == 5
    assert len({s["worker"] for s in steps}) == 1


async def test_steps_launched_before_the_pin_go_to_the_pinned_worker(
    runner: FlowRunner, workers: _Workers, pg_pool: asyncpg.Pool
) -> None:
    """The first module is a parallel loop: its steps are all queued before any worker
    claimed one (so none is pinned yet), and both idle workers claim some. Each worker
    runs two jobs at once: steps of the flow running side by side share the folder
    (each writes into what the others made)."""
    touch = (
        "import time\n"
        "def main(i):\n"
        "    with open('shared/all.txt', 'a') as f:\n"
        "        f.write(f'{i}\\n')\n"
        "    time.sleep(0.3)\n"
        "    open(f'shared/item-{i}', 'w').close()\n"
        "    with open('shared/all.txt', 'a') as f:\n"
        "        f.write(f'{i}\\n')\n"
        "    return i\n"
    )
    value = {
        "same_worker": True,
        "modules": [
            _loop("loop", 6, [py("touch", touch, i="flow_input.iter.value")], parallel=True),
            py("list", LISTING),
            py("lines", "def main():\n    return len(open('shared/all.txt').readlines())\n"),
        ],
    }
    async with workers.running(2, loops=2) as tasks:
        job_id = await runner.submit(value)
        done = await runner.wait(job_id, tasks=tasks, timeout=120)
    assert done.status == "success", done
    assert done.result == 12
    listed = await pg_pool.fetchval(
        "SELECT c.result FROM jobs j JOIN jobs_completed c ON c.id = j.id "
        "WHERE j.root_job = $1 AND j.flow_step = 'list'",
        job_id,
    )
    assert listed == ["all.txt", *(f"item-{i}" for i in range(6))]
    steps = await _steps(pg_pool, job_id)
    assert len(steps) == 8  # each step once
    assert len({s["worker"] for s in steps}) == 1
    assert {s["attempt"] for s in steps} == {1}  # a hand-over is not an attempt


async def test_jobs_pinned_to_a_lost_worker_get_their_tags_back(
    runner: FlowRunner, pg_pool: asyncpg.Pool
) -> None:
    """Whatever the order of zombie recovery and of the pin's release: a step queued
    for a lost worker (here with no flow pinned to it any more) is not stranded, and a
    live worker keeps its steps."""
    queue = runner.queue
    jobs = [
        NewJob(
            id=uuid.uuid4(),
            workspace="main",
            kind="preview",
            tag="python3",
            created_by="tester",
            trigger_kind="api",
            language="python3",
            code="def main():\n    return 1\n",
        )
        for _ in range(2)
    ]
    await queue.enqueue(jobs)
    await pg_pool.execute("INSERT INTO workers (id, tags) VALUES ('wk-alive', '{}')")
    async with pg_pool.acquire() as conn:
        await queue.retag(conn, [jobs[0].id], worker_tag("wk-gone"))
        await queue.retag(conn, [jobs[1].id], worker_tag("wk-alive"))
    assert await release_lost_workers(queue, heartbeat_timeout_s=1.0) == 1
    tags = {row["id"]: row["tag"] for row in await pg_pool.fetch("SELECT id, tag FROM job_queue")}
    assert tags == {jobs[0].id: "python3", jobs[1].id: "worker:wk-alive"}
    text = "".join(chunk for _, chunk in await queue.read_logs(jobs[0].id))
    assert "worker wk-gone of this same_worker flow is lost" in text
    assert await release_lost_workers(queue, heartbeat_timeout_s=1.0) == 0


def _worker_env(database_url: str, tmp_path: Path, name: str) -> dict[str, str]:
    return {
        "GRISTMILL_DATABASE_URL": database_url,
        "GRISTMILL_HEARTBEAT_INTERVAL_S": "0.2",
        "GRISTMILL_WORKERS": "1",
        "GRISTMILL_DATA_DIR": str(tmp_path / name),
        "GRISTMILL_MIGRATE_ON_START": "false",
    }


@pytest.mark.slow
async def test_the_flow_goes_on_when_its_worker_is_killed(
    spawn: Callable[..., GristmillProcess],
    runner: FlowRunner,
    database_url: str,
    pg_pool: asyncpg.Pool,
    tmp_path: Path,
) -> None:
    value = {
        "same_worker": True,
        "modules": [
            py("s1", WRITE, word="flow_input.word"),
            py("s2", "import time\ndef main():\n    time.sleep(1.5)\n    return 2\n"),
            py("s3", LISTING),
        ],
    }
    job_id = await runner.submit(value, {"word": "lost"})
    first = spawn(["worker"], _worker_env(database_url, tmp_path, "a"), name="worker-a")

    async def s2_running() -> str | None:
        first.assert_alive()
        worker: str | None = await pg_pool.fetchval(
            "SELECT q.worker FROM job_queue q JOIN jobs j ON j.id = q.id "
            "WHERE j.root_job = $1 AND j.flow_step = 's2' AND q.running",
            job_id,
        )
        return worker

    pinned = await wait_until(s2_running, timeout=60, interval=0.02, what="step s2 to run")
    assert await pg_pool.fetchval("SELECT worker FROM flow_status WHERE id = $1", job_id) == pinned
    first.kill()
    spawn(["worker"], _worker_env(database_url, tmp_path, "b"), name="worker-b")
    queue = Queue(pg_pool, on_child_finished=on_child_finished)
    dispatcher = Dispatcher(pg_pool, queue, maintenance=MaintenanceSettings(zombie_timeout_s=1.0))
    counts = {"zombies": 0, "lost_pins": 0}
    deadline = time.monotonic() + 120
    while (
        row := await pg_pool.fetchrow("SELECT * FROM jobs_completed WHERE id = $1", job_id)
    ) is None:
        assert time.monotonic() < deadline, "the flow did not end"
        for key, count in (await dispatcher.maintain_once(purge=False)).items():
            if key in counts:
                counts[key] += count
        await asyncio.sleep(0.2)
    done = Completed(row)
    # The flow ended (per the policy: steps go on on another worker, on a new folder).
    assert done.status == "success", done
    assert done.result == []  # s3 ran on the new worker: what s1 wrote is gone
    assert counts["zombies"] >= 1, counts
    assert counts["lost_pins"] >= 1, counts
    steps = {s["flow_step"]: s for s in await _steps(pg_pool, job_id)}
    assert sorted(steps) == ["s1", "s2", "s3"]  # each step made once: no double advance
    assert steps["s1"]["worker"] == pinned
    assert steps["s2"]["attempt"] == 2
    assert steps["s2"]["worker"] != pinned
    assert steps["s3"]["worker"] == steps["s2"]["worker"]
    assert {s["status"] for s in steps.values()} == {"success"}
    repinned = await pg_pool.fetchval("SELECT worker FROM flow_status WHERE id = $1", job_id)
    assert repinned == steps["s2"]["worker"]
    # The loss is told in the logs of the step that moved and of the flow.
    for logged in (steps["s2"]["id"], job_id):
        text = "".join(chunk for _, chunk in await queue.read_logs(logged))
        assert f"worker {pinned} of this same_worker flow is lost" in text
    assert await pg_pool.fetchval("SELECT count(*) FROM job_queue") == 0
