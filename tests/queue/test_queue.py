"""The queue module against a real Postgres: claims, retries, cancel, limits, recovery."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from typing import Any

import asyncpg
import pytest

from gristmill.common.contracts.jobs import ExitReason, JobError
from gristmill.common.contracts.runs import RetryPolicy
from gristmill.common.errors import InvalidRequest, NotFound, PayloadTooLarge
from gristmill.common.queue import (
    CancelOutcome,
    Completion,
    FailOutcome,
    NewJob,
    Queue,
    QueueLimits,
)
from gristmill.common.tokens import create_token


def job(**overrides: Any) -> NewJob:
    values: dict[str, Any] = {
        "id": uuid.uuid4(),
        "workspace": "main",
        "kind": "preview",
        "tag": "python3",
        "created_by": "tester",
        "trigger_kind": "api",
        "language": "python3",
        "code": "def main():\n    return 1\n",
    }
    values.update(overrides)
    return NewJob(**values)


@pytest.fixture
def queue(pg_pool: asyncpg.Pool) -> Queue:
    return Queue(pg_pool)


async def completed(pool: asyncpg.Pool, job_id: uuid.UUID) -> asyncpg.Record | None:
    return await pool.fetchrow("SELECT * FROM jobs_completed WHERE id = $1", job_id)


async def test_enqueue_is_idempotent_on_job_id_and_key(queue: Queue, pg_pool: asyncpg.Pool) -> None:
    first = job(idempotency_key="order-42")
    assert await queue.enqueue([first]) == [first.id]
    # Same id again, and another id with the same idempotency key: nothing new.
    assert await queue.enqueue([first]) == []
    assert await queue.enqueue([job(idempotency_key="order-42")]) == []
    # Duplicates inside one batch collapse too.
    twin = job()
    assert await queue.enqueue([twin, twin]) == [twin.id]
    assert await pg_pool.fetchval("SELECT count(*) FROM jobs") == 2
    assert await pg_pool.fetchval("SELECT count(*) FROM job_queue") == 2


async def test_claim_orders_by_priority_then_time(queue: Queue) -> None:
    low = job(priority=0)
    await queue.enqueue([low])
    high = job(priority=50)
    mid = job(priority=10)
    await queue.enqueue([mid])
    await queue.enqueue([high])
    claimed = await queue.claim("w", ["python3"], limit=3)
    assert [j.id for j in claimed] == [high.id, mid.id, low.id]


async def test_claim_matches_tags_only(queue: Queue) -> None:
    bash = job(tag="bash", language="bash")
    await queue.enqueue([bash])
    assert await queue.claim("w", ["python3"], limit=5) == []
    [claimed] = await queue.claim("w", ["python3", "bash"], limit=5)
    assert claimed.id == bash.id


async def test_scheduled_jobs_wait(queue: Queue, pg_pool: asyncpg.Pool) -> None:
    later = job()
    await queue.enqueue([later])
    await pg_pool.execute(
        "UPDATE job_queue SET scheduled_for = now() + interval '1 hour' WHERE id = $1", later.id
    )
    assert await queue.claim("w", ["python3"]) == []


async def test_complete_exactly_once(queue: Queue, pg_pool: asyncpg.Pool) -> None:
    j = job()
    await queue.enqueue([j])
    [claimed] = await queue.claim("w", ["python3"])
    assert await queue.complete(claimed, {"answer": 42})
    assert not await queue.complete(claimed, {"answer": 43})
    row = await completed(pg_pool, j.id)
    assert row is not None
    assert (row["status"], row["result"], row["attempt"]) == ("success", {"answer": 42}, 1)
    assert await pg_pool.fetchval("SELECT count(*) FROM job_queue") == 0
    assert await pg_pool.fetchval("SELECT count(*) FROM job_runtime") == 0


async def test_complete_many_ends_a_batch_in_one_statement(
    queue: Queue, pg_pool: asyncpg.Pool
) -> None:
    keyed = [job(concurrency_key="quota", concurrency_limit=5) for _ in range(3)]
    plain = [job() for _ in range(4)]
    await queue.enqueue(keyed + plain)
    claimed = await queue.claim("w", ["python3"], limit=10)
    assert len(claimed) == 7
    assert await pg_pool.fetchval("SELECT running FROM concurrency_slots WHERE key = 'quota'") == 3
    # Keyed ones first, then the plain ones; the last plain one was ended elsewhere
    # meanwhile (a timeout sweep, say): its lease is lost.
    claimed.sort(key=lambda j: j.concurrency_key is None)
    results: list[Any] = [[1, 2], [[3, 4], [5]], {"a": [1]}, None, "text", 7, [{"x": None}]]
    lost = claimed[-1]
    await pg_pool.execute("UPDATE job_queue SET worker = 'other' WHERE id = $1", lost.id)
    await pg_pool.execute("INSERT INTO users (id) VALUES ('tester') ON CONFLICT DO NOTHING")
    for item in (claimed[0], lost):
        await create_token(pg_pool, user_id="tester", job_id=item.id)
    done = [
        Completion(job, result, duration_ms=10 + i, memory_peak_kb=1000 + i)
        for i, (job, result) in enumerate(zip(claimed, results, strict=True))
    ]
    recorded = await queue.complete_many(done)
    assert recorded == [True] * 6 + [False]
    for i, item in enumerate(done[:6]):
        row = await completed(pg_pool, item.job.id)
        assert row is not None
        assert (row["status"], row["exit_reason"], row["result"]) == ("success", "ok", results[i])
        assert (row["duration_ms"], row["memory_peak_kb"]) == (10 + i, 1000 + i)
    assert await completed(pg_pool, lost.id) is None
    # Slots given back once per keyed job; tokens and runtime rows gone with the jobs.
    assert await pg_pool.fetchval("SELECT running FROM concurrency_slots WHERE key = 'quota'") == 0
    assert await pg_pool.fetchval("SELECT count(*) FROM job_queue") == 1
    assert await pg_pool.fetchval("SELECT count(*) FROM job_runtime") == 1
    assert await pg_pool.fetchval("SELECT array_agg(job_id) FROM tokens") == [lost.id]
    # Recorded once: a second call records nothing.
    assert await queue.complete_many(done[:6]) == [False] * 6


async def test_claim_hook_commits_with_the_claim(queue: Queue, pg_pool: asyncpg.Pool) -> None:
    first, second = job(), job()
    await queue.enqueue([first, second])
    await pg_pool.execute("INSERT INTO users (id) VALUES ('tester')")
    seen: list[uuid.UUID] = []

    async def failing_hook(conn: Any, jobs: list[Any]) -> None:
        seen.extend(j.id for j in jobs)
        await create_token(conn, user_id="tester", job_id=jobs[0].id)
        raise RuntimeError("hook failed")

    with pytest.raises(RuntimeError):
        await queue.claim("w", ["python3"], limit=1, on_claimed=failing_hook)
    # Rolled back with the hook: the job is claimable again and no token was left.
    assert await pg_pool.fetchval("SELECT count(*) FROM job_queue WHERE running") == 0
    assert await pg_pool.fetchval("SELECT count(*) FROM tokens") == 0

    async def token_hook(conn: Any, jobs: list[Any]) -> None:
        for j in jobs:
            await create_token(conn, user_id="tester", job_id=j.id)

    claimed = await queue.claim("w", ["python3"], limit=5, on_claimed=token_hook)
    assert {j.id for j in claimed} == {first.id, second.id}
    assert seen[0] in {first.id, second.id}
    tokens = await pg_pool.fetch("SELECT job_id FROM tokens")
    assert {row["job_id"] for row in tokens} == {first.id, second.id}


async def test_retry_with_exponential_backoff(queue: Queue, pg_pool: asyncpg.Pool) -> None:
    j = job(retry=RetryPolicy(max_attempts=3, delay_s=0.2, multiplier=2.0))
    await queue.enqueue([j])
    error = JobError(name="ValueError", message="boom")

    [first] = await queue.claim("w", ["python3"])
    assert await queue.fail(first, error) == FailOutcome.RETRY_SCHEDULED
    delay1 = await pg_pool.fetchval(
        "SELECT extract(epoch FROM scheduled_for - now()) FROM job_queue WHERE id = $1", j.id
    )
    assert 0.1 < delay1 <= 0.2
    assert await queue.claim("w", ["python3"]) == []  # not before its time

    [second] = await _claim_eventually(queue)
    assert second.attempt == 2
    assert await queue.fail(second, error) == FailOutcome.RETRY_SCHEDULED
    delay2 = await pg_pool.fetchval(
        "SELECT extract(epoch FROM scheduled_for - now()) FROM job_queue WHERE id = $1", j.id
    )
    assert 0.3 < delay2 <= 0.4  # doubled

    [third] = await _claim_eventually(queue)
    assert third.attempt == 3
    assert await queue.fail(third, error) == FailOutcome.FAILED
    row = await completed(pg_pool, j.id)
    assert row is not None
    assert row["status"] == "failure"
    assert row["error"]["message"] == "boom"
    assert row["attempt"] == 3
    logs = "".join(chunk for _, chunk in await queue.read_logs(j.id))
    assert "attempt 1 failed: ValueError: boom; retrying in 0.2s" in logs
    assert "attempt 2 failed" in logs


async def _claim_eventually(queue: Queue, timeout: float = 5.0) -> list[Any]:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        claimed = await queue.claim("w", ["python3"])
        if claimed:
            return claimed
        await asyncio.sleep(0.02)
    raise AssertionError("nothing became claimable")


async def test_non_retryable_failure_skips_policy(queue: Queue, pg_pool: asyncpg.Pool) -> None:
    j = job(retry=RetryPolicy(max_attempts=5))
    await queue.enqueue([j])
    [claimed] = await queue.claim("w", ["python3"])
    outcome = await queue.fail(claimed, JobError(name="E", message="m"), retryable=False)
    assert outcome == FailOutcome.FAILED
    assert (await completed(pg_pool, j.id))["status"] == "failure"  # type: ignore[index]


async def test_cancel_queued_job(queue: Queue, pg_pool: asyncpg.Pool) -> None:
    j = job()
    await queue.enqueue([j])
    assert await queue.cancel(j.id, by="alice", reason="not needed") == CancelOutcome.CANCELED
    row = await completed(pg_pool, j.id)
    assert row is not None
    assert row["status"] == "canceled"
    assert row["canceled_by"] == "alice"
    assert row["error"]["message"] == "canceled by alice: not needed"
    assert await queue.claim("w", ["python3"]) == []
    assert await queue.cancel(j.id, by="alice") == CancelOutcome.ALREADY_COMPLETED


async def test_cancel_running_job_reaches_its_worker(queue: Queue, pg_pool: asyncpg.Pool) -> None:
    j = job()
    await queue.enqueue([j])
    [claimed] = await queue.claim("w", ["python3"])
    assert await queue.heartbeat("w", [j.id]) == {}
    assert await queue.cancel(j.id, by="bob") == CancelOutcome.REQUESTED
    assert await queue.heartbeat("w", [j.id]) == {j.id: True}
    error = JobError(name="Canceled", message="canceled by bob", exit_reason=ExitReason.CANCELED)
    assert await queue.complete_canceled(claimed, error)
    row = await completed(pg_pool, j.id)
    assert row is not None
    assert (row["status"], row["canceled_by"]) == ("canceled", "bob")


async def test_cancel_unknown_job(queue: Queue) -> None:
    with pytest.raises(NotFound):
        await queue.cancel(uuid.uuid4(), by="x")


async def test_zombie_is_requeued_then_given_up(pg_pool: asyncpg.Pool) -> None:
    queue = Queue(pg_pool, zombie_restart_limit=1)
    j = job()
    await queue.enqueue([j])
    [lost] = await queue.claim("dead-worker", ["python3"])
    await pg_pool.execute("UPDATE job_runtime SET ping = now() - interval '1 minute'")
    assert await queue.recover_zombies(heartbeat_timeout_s=30) == 1
    # The dead worker's late completion is refused; its heartbeat says "not yours".
    assert not await queue.complete(lost, "late")
    assert await queue.heartbeat("dead-worker", [j.id]) == {j.id: False}
    [again] = await queue.claim("live-worker", ["python3"])
    assert (again.attempt, again.restarts) == (2, 1)
    await pg_pool.execute("UPDATE job_runtime SET ping = now() - interval '1 minute'")
    assert await queue.recover_zombies(heartbeat_timeout_s=30) == 1
    row = await completed(pg_pool, j.id)
    assert row is not None
    assert (row["status"], row["exit_reason"]) == ("failure", "lost")
    assert "stopped responding 2 times" in row["error"]["message"]


async def test_fresh_heartbeats_are_not_zombies(queue: Queue) -> None:
    await queue.enqueue([job()])
    await queue.claim("w", ["python3"])
    assert await queue.recover_zombies(heartbeat_timeout_s=30) == 0


async def test_timeout_sweep_fails_overdue_jobs(queue: Queue, pg_pool: asyncpg.Pool) -> None:
    j = job(timeout_s=1)
    await queue.enqueue([j])
    [claimed] = await queue.claim("w", ["python3"])
    await pg_pool.execute("UPDATE job_queue SET started_at = now() - interval '10 seconds'")
    assert await queue.enforce_timeouts(grace_s=2) == 1
    row = await completed(pg_pool, j.id)
    assert row is not None
    assert (row["status"], row["exit_reason"]) == ("failure", "timeout")
    assert await queue.heartbeat("w", [j.id]) == {j.id: False}
    assert not await queue.complete(claimed, "too late")


async def test_concurrency_limit_holds_under_contention(
    queue: Queue, pg_pool: asyncpg.Pool
) -> None:
    keyed = [job(concurrency_key="api-quota", concurrency_limit=2) for _ in range(30)]
    free = [job() for _ in range(5)]
    await queue.enqueue(keyed + free)
    claimers = 8

    async def claim_round(i: int) -> list[Any]:
        return await queue.claim(f"w{i}", ["python3"], limit=10)

    batches = await asyncio.gather(*(claim_round(i) for i in range(claimers)))
    running = [j for batch in batches for j in batch]
    keyed_running = [j for j in running if j.concurrency_key == "api-quota"]
    assert len(keyed_running) == 2
    assert {j.id for j in free} <= {j.id for j in running}
    assert (
        await pg_pool.fetchval("SELECT running FROM concurrency_slots WHERE key = 'api-quota'") == 2
    )

    # Drain: at no point more than two keyed jobs hold a slot.
    done = 0
    held = list(keyed_running)
    while held:
        finishing = held.pop()
        assert await queue.complete(finishing, None)
        done += 1
        again = await asyncio.gather(*(claim_round(i) for i in range(claimers)))
        held += [j for batch in again for j in batch if j.concurrency_key == "api-quota"]
        assert len(held) <= 2
        slots = await pg_pool.fetchval(
            "SELECT running FROM concurrency_slots WHERE key = 'api-quota'"
        )
        assert slots == len(held)
    assert done == 30


async def test_eight_claimers_ten_thousand_jobs_exactly_once(
    queue: Queue, pg_pool: asyncpg.Pool
) -> None:
    total = 10_000
    ids = [uuid.uuid4() for _ in range(total)]
    for start in range(0, total, 1000):
        await queue.enqueue([job(id=i) for i in ids[start : start + 1000]])
    seen: Counter[uuid.UUID] = Counter()

    async def claimer(name: str) -> None:
        while True:
            batch = await queue.claim(name, ["python3"], limit=25)
            if not batch:
                return
            for claimed in batch:
                seen[claimed.id] += 1
                assert await queue.complete(claimed, {"by": name})

    await asyncio.gather(*(claimer(f"claimer-{i}") for i in range(8)))
    assert len(seen) == total
    assert max(seen.values()) == 1
    assert set(seen) == set(ids)
    assert await pg_pool.fetchval("SELECT count(*) FROM jobs_completed") == total
    assert await pg_pool.fetchval("SELECT count(DISTINCT result->>'by') FROM jobs_completed") == 8
    assert await pg_pool.fetchval("SELECT count(*) FROM job_queue") == 0


@pytest.mark.parametrize(
    ("overrides", "error", "location", "fragment"),
    [
        ({"tag": "bad tag!"}, InvalidRequest, "jobs[0].tag", "invalid tag 'bad tag!'"),
        ({"tag": ""}, InvalidRequest, "jobs[0].tag", "invalid tag"),
        ({"priority": -1}, InvalidRequest, "jobs[0].priority", "between 0 and 100, got -1"),
        ({"priority": 101}, InvalidRequest, "jobs[0].priority", "got 101"),
        ({"args": {"blob": "x" * 2048}}, PayloadTooLarge, "jobs[0].args", "over the limit of 1024"),
        ({"concurrency_key": "k"}, InvalidRequest, "jobs[0].concurrency_limit", "at least 1"),
        ({"timeout_s": 0}, InvalidRequest, "jobs[0].timeout_s", "positive"),
    ],
)
async def test_bad_jobs_are_rejected_with_location(
    pg_pool: asyncpg.Pool,
    overrides: dict[str, Any],
    error: type[Exception],
    location: str,
    fragment: str,
) -> None:
    queue = Queue(pg_pool, limits=QueueLimits(max_args_bytes=1024))
    with pytest.raises(error) as caught:
        await queue.enqueue([job(**overrides)])
    assert caught.value.location == location  # type: ignore[attr-defined]
    assert fragment in str(caught.value)
    assert await pg_pool.fetchval("SELECT count(*) FROM jobs") == 0


async def test_retention_purges_old_jobs_and_logs(queue: Queue, pg_pool: asyncpg.Pool) -> None:
    old, recent = job(), job()
    await queue.enqueue([old, recent])
    for claimed in await queue.claim("w", ["python3"], limit=2):
        await queue.append_log(claimed.id, "hello\n")
        assert await queue.complete(claimed, 1)
    await pg_pool.execute(
        "UPDATE jobs_completed SET completed_at = now() - interval '40 days' WHERE id = $1", old.id
    )
    assert await queue.purge(retention_s=30 * 24 * 3600) == 1
    assert await pg_pool.fetchval("SELECT count(*) FROM jobs WHERE id = $1", old.id) == 0
    assert await pg_pool.fetchval("SELECT count(*) FROM job_logs WHERE job_id = $1", old.id) == 0
    assert (
        await pg_pool.fetchval("SELECT count(*) FROM jobs_completed WHERE id = $1", recent.id) == 1
    )
    assert await queue.read_logs(recent.id) == [(0, "hello\n")]


async def test_logs_are_appended_in_order(queue: Queue) -> None:
    j = job()
    await queue.enqueue([j])
    for i in range(5):
        await queue.append_log(j.id, f"line {i}\n")
    chunks = await queue.read_logs(j.id)
    assert [seq for seq, _ in chunks] == [0, 1, 2, 3, 4]
    assert await queue.read_logs(j.id, from_seq=3) == [(3, "line 3\n"), (4, "line 4\n")]


async def test_enqueue_notifies_listeners(queue: Queue, database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    received: list[str] = []
    try:
        await conn.add_listener("gristmill_jobs", lambda *args: received.append(args[3]))
        await queue.enqueue([job(tag="bash"), job(tag="python3"), job(tag="python3")])
        for _ in range(100):
            if len(received) >= 2:
                break
            await asyncio.sleep(0.01)
    finally:
        await conn.close()
    assert sorted(received) == ["bash", "python3"]
